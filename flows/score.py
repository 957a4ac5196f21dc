"""Batch scoring: a file or S3 prefix of texts in, predictions out, logged to the traffic log."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from fleet import scoring
from fleet.settings import Settings


@task(name="read-texts", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def read_texts(source: str, text_column: str) -> list[str]:
    return scoring.read_texts(source, text_column)


@task(name="score", cache_policy=NONE)
def score(name: str, texts: list[str], settings: Settings):
    return scoring.score(name, texts, settings.store_handle())


@task(name="write-predictions", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def write(df, dest: str) -> str:
    return scoring.write_predictions(df, dest)


@flow(name="score", flow_run_name="score-{name}")
def score_flow(name: str, source: str, dest: str, text_column: str = "text") -> dict:
    settings = Settings.load().apply()
    texts = read_texts(source, text_column)
    df = score(name, texts, settings)
    return {"specialist": name, "rows": len(df), "dest": write(df, dest)}
