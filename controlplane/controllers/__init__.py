"""Leader-only, level-triggered control loops: services, scheduling, clean-up."""
