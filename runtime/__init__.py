"""The serving runtime: ONNX Runtime + gRPC + Prometheus metrics. Never imports torch or trainer."""
