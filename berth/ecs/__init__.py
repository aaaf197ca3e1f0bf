"""ECS's public vocabulary for Berth's objects: ARNs (`arns`) and the JSON objects ECS's API
returns (`shapes`). The ECS-compatible HTTP API and the CLI's `-o json|yaml` both print
through these, so a script written against `aws ecs` reads `berth ... -o json` unchanged."""
