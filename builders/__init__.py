"""Builders turn models into a Triton model repository.

Kept import-light on purpose: clients and tests import `builders.contract` without torch.
"""
