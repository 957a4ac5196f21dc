"""The floor everything stands on: the fleet file and its sections, settings, the typed results and records
the stages hand each other, the object store, leases and compute slots. Imports nothing else of ``fleet``."""
