"""The data flywheel: served traffic and ingested files become a specialist's training data.

The loop, in the order a user meets it: ``pool`` (unlabelled rows from the traffic log and ``fleet ingest``,
curated by the same rules as training data), ``teacher`` (a general model labels the pool, with a confidence
and its cost), ``queue`` (rows ranked by how much a human label would help; reviewed in the terminal or in
Label Studio), ``ledger`` (every label with who or what gave it, and when; nothing applied twice),
``audit`` (likely mislabelled training rows, cleanlab on out-of-fold predictions) and ``flywheel`` (the rows
a retrain adds: reviewed ones, and teacher labels above the confidence threshold, into the training split only).
"""
