"""The ECS-compatible HTTP API: AWS JSON 1.1 requests signed with SigV4, in ECS's shapes."""
