"""Clients for the pipelines served by tritonyard (tritonclient over HTTP or gRPC)."""
