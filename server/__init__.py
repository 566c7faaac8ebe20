"""The gRPC front: validate, convert, delegate to the scheduler, map errors, health, reflection."""
