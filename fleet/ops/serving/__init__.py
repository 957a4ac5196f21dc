"""Serving the fleet: one process, each base model loaded once, every champion's adapter on top."""
