"""The `berth` operator CLI: a thin gRPC client of the control plane."""
