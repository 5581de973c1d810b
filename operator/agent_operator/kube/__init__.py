"""Kubernetes I/O of the operator: pods, token reviews. No LiveKit, no gRPC here."""
