"""Generated protobuf and gRPC code for the berth.v1 API (see proto/)."""
