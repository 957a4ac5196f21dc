"""Where the fleet keeps its state, read from the environment at the entry point.

The embedded default puts everything under one home folder (``FLEET_HOME``,
default ``./.fleet``): Prefect's home and database, MLflow's SQLite store and
artifacts, the object store, and run folders. Any of them can point at a real
server instead (``PREFECT_API_URL``, ``MLFLOW_TRACKING_URI``, ``FLEET_STORE=s3://...``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    home: Path = Field(Path(".fleet"), description="Folder for all embedded state (FLEET_HOME).")
    store: str | None = Field(None, description="Object store: a folder or s3://BUCKET/PREFIX (FLEET_STORE).")
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias="MLFLOW_TRACKING_URI", description="MLflow server; default SQLite under the home."
    )
    artifact_root: str | None = Field(None, description="Where new MLflow experiments keep artifacts (FLEET_ARTIFACT_ROOT).")

    def model_post_init(self, _ctx) -> None:
        self.home = self.home.expanduser().resolve()

    @property
    def store_url(self) -> str:
        return self.store or str(self.home / "store")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def artifacts(self) -> str:
        return self.artifact_root or str(self.home / "mlflow" / "artifacts")

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    def apply(self) -> "Settings":
        """Create the home and point Prefect and MLflow at it. Call before importing prefect."""
        (self.home / "mlflow").mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        os.environ["FLEET_HOME"] = str(self.home)
        os.environ.setdefault("PREFECT_HOME", str(self.prefect_home))
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        # Hub models are only fetched when no local copy exists; never phone home for telemetry.
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The temporary server's first start migrates a new database: on 2 busy cores that can pass 20 s.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return self

    def store_handle(self):
        from fleet.storage import open_store

        return open_store(self.store_url)
