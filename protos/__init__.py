"""The wire contract: .proto files and their generated Python (package inspo.runtime.v1)."""
