"""Builders turn models into a Triton model repository.

Kept import-light on purpose: `python -m builders --help` answers without torch. Tensor names and
geometry live in the `tritonyard_contract` package, which the builders import and ship.
"""
