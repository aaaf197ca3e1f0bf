"""gRPC servicers: the operator API and the agent stream."""
