"""Specialist Fleet: the plain-Python library (no Prefect imports)."""
