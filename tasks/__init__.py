"""Prefect tasks: thin wrappers over ``fleet/`` with retries, logging and artifacts."""
