"""Prefect flows: wiring of tasks, one file per flow."""
