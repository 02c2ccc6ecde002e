"""The gRPC surface: ``inference.GRPCInferenceService`` (OIP v2 / Triton) and grpc.health.v1."""
