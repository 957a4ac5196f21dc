"""Batch scoring: a file or S3 prefix of texts in, the champion's answers out, logged to the traffic log."""

from __future__ import annotations

from prefect import flow

from fleet.core.settings import Settings
from tasks import scoring as t


@flow(name="score", flow_run_name="score-{name}")
def score_flow(name: str, source: str, dest: str, text_column: str = "text") -> dict:
    """The champion of ``name`` answers every text of ``source``; the answers go to ``dest`` (JSONL)."""
    settings = Settings.load().apply()
    df = t.score(name, t.read_texts(source, text_column, settings), settings)
    return {"specialist": name, "rows": len(df), "dest": t.write(df, dest)}
