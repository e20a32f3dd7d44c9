"""Generated gRPC/protobuf code for inspo.runtime.v1 (see protos/generate.py)."""
