"""Tasks of batch scoring: read texts, answer them with the champion, write the answers."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from fleet.core.settings import Settings
from fleet.ops import batch

_IO: dict[str, Any] = {"retries": 2, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "cache_policy": NONE}


@task(name="read-texts", **_IO)
def read_texts(source: str, text_column: str, settings: Settings) -> list[str]:
    return batch.read_texts(source, text_column, settings.data_root_paths)


@task(name="score", cache_policy=NONE)
def score(name: str, texts: list[str], settings: Settings) -> pd.DataFrame:
    return batch.score(name, texts, settings.store_handle(), settings.traffic_key)


@task(name="write-predictions", **_IO)
def write(df: pd.DataFrame, dest: str) -> str:
    return batch.write_predictions(df, dest)
