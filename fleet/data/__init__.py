"""A specialist's data: reading sources, cleaning rules, PII redaction, near-duplicates, leak-free splits and
immutable, content-addressed dataset versions."""
