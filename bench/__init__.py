"""Benchmarks against a local anvil (outside the product's import path): `python -m bench`."""
