"""The stages of one specialist's path, written once against the kinds: curation, training, evaluation,
reference profiles and registration in MLflow (with the pyfunc every version is logged as)."""
