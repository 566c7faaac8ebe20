"""Generated protobuf and gRPC stubs for pointillist.v1."""
