"""Every endpoint and credential the fleet uses, in one pydantic-settings model.

Values come from the environment and, optionally, a dotenv-style file named by ``FLEET_ENV_FILE``
(``fleet up`` writes one for its local stack). The environment wins over the file.

The embedded default puts everything under one home folder (``FLEET_HOME``, default ``.fleet`` in the
nearest folder at or above the current one that holds a fleet: ``fleet.core.discovery``):
Prefect's home and temporary server, MLflow's SQLite store and artifacts, the object store, and run
folders. The production profile points each at a server instead: ``PREFECT_API_URL`` (Prefect server on
Postgres), ``MLFLOW_TRACKING_URI`` (MLflow server on Postgres with S3 artifacts), ``FLEET_STORE=s3://...``
(data, data sets, checkpoints). S3 credentials are not settings: boto3 takes them from the standard AWS
chain (environment, ``AWS_PROFILE``, shared credentials file, instance or pod role).

Secrets are ``SecretStr``: they print as ``**********`` in ``repr``, in ``fleet settings`` and in logs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet.core import compute, discovery

ENV_FILE_VAR = "FLEET_ENV_FILE"


def _env(name: str, *more: str):
    return AliasChoices(name, *more)


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # -- embedded state and the object store
    home: Path = Field(
        default_factory=discovery.default_home,
        validation_alias=_env("FLEET_HOME"),
        description="Folder for all embedded state; unset: .fleet in the nearest folder at or above the current "
        "one that holds a .fleet/ or a fleet file (fleet.yaml, deployments/fleet.yaml), as git finds its repository.",
    )
    store: str | None = Field(
        None,
        validation_alias=_env("FLEET_STORE"),
        description="Object store for data sets, checkpoints, traffic: a folder or s3://BUCKET/PREFIX.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=_env("AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO, moto); empty for AWS itself.",
    )
    aws_region: str | None = Field(None, validation_alias=_env("AWS_DEFAULT_REGION", "AWS_REGION"))
    aws_profile: str | None = Field(
        None, validation_alias=_env("AWS_PROFILE"), description="Named profile of the AWS credential chain."
    )
    aws_shared_credentials_file: str | None = Field(None, validation_alias=_env("AWS_SHARED_CREDENTIALS_FILE"))

    # -- Prefect
    prefect_api_url: str | None = Field(
        None,
        validation_alias=_env("PREFECT_API_URL"),
        description="Prefect server API; empty: a temporary local server.",
    )
    prefect_api_key: SecretStr | None = Field(None, validation_alias=_env("PREFECT_API_KEY"))
    prefect_api_auth_string: SecretStr | None = Field(
        None, validation_alias=_env("PREFECT_API_AUTH_STRING"), description="user:password of a server with basic auth."
    )

    # -- MLflow
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=_env("MLFLOW_TRACKING_URI"),
        description="MLflow tracking server; empty: SQLite under the home.",
    )
    mlflow_tracking_username: str | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_USERNAME"))
    mlflow_tracking_password: SecretStr | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_PASSWORD"))
    mlflow_tracking_token: SecretStr | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_TOKEN"))
    artifact_root: str | None = Field(
        None,
        validation_alias=_env("FLEET_ARTIFACT_ROOT"),
        description="Artifact location of new experiments; default: the server's.",
    )

    # -- scale-out
    task_runner: Literal["threads", "dask", "deployments"] = Field(
        "threads",
        validation_alias=_env("FLEET_TASK_RUNNER"),
        description="How the fleet flow fans out: threads in-process, a Dask cluster, or one deployment run each.",
    )
    max_workers: int = Field(
        2, ge=1, validation_alias=_env("FLEET_MAX_WORKERS"), description="threads: specialists at once."
    )
    compute_slots: int = Field(
        1,
        ge=1,
        validation_alias=_env("FLEET_COMPUTE_SLOTS"),
        description="Model-heavy stages (fine-tune, scoring, profiles) running at once per process (fleet.core.compute).",
    )
    train_wait_s: float = Field(
        4 * 3600,
        gt=0,
        validation_alias=_env("FLEET_TRAIN_WAIT_S"),
        description="How long a run waits while another one trains the same training key (then it fails).",
    )
    dask_address: str | None = Field(
        None,
        validation_alias=_env("FLEET_DASK_ADDRESS"),
        description="dask: scheduler address (tcp://...); empty: a local cluster.",
    )
    dask_workers: int = Field(
        2, ge=1, validation_alias=_env("FLEET_DASK_WORKERS"), description="dask: worker processes of the local cluster."
    )
    specialist_deployment: str = Field(
        "specialist/specialist",
        validation_alias=_env("FLEET_SPECIALIST_DEPLOYMENT"),
        description="deployments: the FLOW/DEPLOYMENT run once per specialist.",
    )
    worker_name: str | None = Field(
        None,
        validation_alias=_env("FLEET_WORKER_NAME"),
        description="deployments: this worker's name in the fleet run's report of where each specialist ran "
        "(unset: the host name).",
    )
    gpu_work_queue: str = Field(
        "gpu",
        validation_alias=_env("FLEET_GPU_WORK_QUEUE"),
        description="deployments: the work queue of the runs of specialists with `compute: gpu` (its workers "
        "are on GPU machines).",
    )
    cpu_max_base_gb: float = Field(
        4.0,
        gt=0,
        validation_alias=_env("FLEET_CPU_MAX_BASE_GB"),
        description="deployments: a specialist with `compute: auto` whose base's weight files are larger "
        "than this (GB) goes to the GPU work queue.",
    )
    fine_tune_slots: int = Field(
        1,
        ge=1,
        validation_alias=_env("FLEET_FINE_TUNE_SLOTS"),
        description="deployments: fine-tunes at once per worker, a Prefect global concurrency limit "
        "(fine-tune-WORKER) made when missing; curation, evaluation and I/O of other runs go on beside them.",
    )
    specialist_attempts: int = Field(
        2,
        ge=1,
        le=10,
        validation_alias=_env("FLEET_SPECIALIST_ATTEMPTS"),
        description="deployments: runs of a specialist before it counts as failed (a crashed or stuck run is "
        "started again, on whichever worker takes it).",
    )
    heartbeat_s: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("FLEET_HEARTBEAT_S"),
        description="deployments: how often a specialist run writes its heartbeat to the store.",
    )
    stuck_after_s: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("FLEET_STUCK_AFTER_S"),
        description="deployments: a specialist run Running without a heartbeat, or Late/Pending, this long is "
        "stuck: reported (fleet status, event fleet.run.stuck); a silent Running one is marked Crashed and retried.",
    )
    lease_ttl_s: float = Field(
        600.0,
        ge=5,
        validation_alias=_env("FLEET_LEASE_TTL_S"),
        description="How long a lease (one trainer per training key) outlives a holder that stopped renewing it "
        "(a lost worker) before another run takes it over.",
    )

    traffic_hash_key: SecretStr | None = Field(
        None,
        validation_alias=_env("FLEET_TRAFFIC_HASH_KEY"),
        description="Key of the keyed hash each traffic row keeps of its unredacted text (for joining feedback); "
        "unset: a key kept in the object store, readable by whoever reads the store.",
    )
    data_roots: str | None = Field(
        None,
        validation_alias=_env("FLEET_DATA_ROOTS"),
        description="Folders local data sources must lie in (separated by ':'), for fleet files written by "
        "others (deployments, the production profile); unset: any path.",
    )

    # -- model serving (`fleet serve-models`)
    serve_token: SecretStr | None = Field(
        None,
        validation_alias=_env("FLEET_SERVE_TOKEN"),
        description="Bearer token every request but /healthz must carry; unset: no authentication (loopback only).",
    )
    serve_tokens: SecretStr | None = Field(
        None,
        validation_alias=_env("FLEET_SERVE_TOKENS"),
        description="Named bearer tokens, one per client: NAME=TOKEN[,NAME=TOKEN...]. The name is logged with "
        "each request's traffic rows, so the flywheel knows which client sent a text (and caps each one's share).",
    )
    serve_max_rows: int = Field(
        256, ge=1, validation_alias=_env("FLEET_SERVE_MAX_ROWS"), description="Texts per request."
    )
    serve_max_chars: int = Field(
        20_000, ge=1, validation_alias=_env("FLEET_SERVE_MAX_CHARS"), description="Characters per text."
    )
    serve_max_body_bytes: int = Field(
        4 * 2**20, ge=1024, validation_alias=_env("FLEET_SERVE_MAX_BODY_BYTES"), description="Bytes per request body."
    )
    serve_max_queued_rows: int = Field(
        1024,
        ge=1,
        validation_alias=_env("FLEET_SERVE_MAX_QUEUED_ROWS"),
        description="Rows waiting per loaded base; past it, 503 with Retry-After.",
    )
    serve_timeout_s: float = Field(
        60.0, gt=0, validation_alias=_env("FLEET_SERVE_TIMEOUT_S"), description="A request's answer time; then 504."
    )
    serve_stall_s: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("FLEET_SERVE_STALL_S"),
        description="/healthz fails when a base made no progress for this long while work waits.",
    )

    @field_validator("serve_token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        """Stripped (a secret file's trailing newline is not part of the token), then at least 16 characters."""
        if v is None:
            return v
        token = v.get_secret_value().strip()
        if len(token) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return SecretStr(token)

    @field_validator(
        "prefect_api_key",
        "prefect_api_auth_string",
        "mlflow_tracking_password",
        "mlflow_tracking_token",
        "traffic_hash_key",
    )
    @classmethod
    def _not_empty(cls, v: SecretStr | None) -> SecretStr | None:
        """A secret set to nothing (an empty Kubernetes Secret) is a mistake, never "no authentication"."""
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("set but empty: give it a value, or unset the variable")
        return v

    @field_validator("serve_tokens")
    @classmethod
    def _named_tokens(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _parse_tokens(v.get_secret_value())
        return v

    @property
    def traffic_key(self) -> bytes | None:
        """``traffic_hash_key`` as bytes for ``fleet.ops.traffic`` (None: the store's own key)."""
        return self.traffic_hash_key.get_secret_value().encode() if self.traffic_hash_key else None

    def serve_clients(self) -> dict[str, str] | None:
        """Client name -> bearer token (``FLEET_SERVE_TOKEN`` is the client ``default``); None: no tokens."""
        named = _parse_tokens(self.serve_tokens.get_secret_value()) if self.serve_tokens else {}
        if self.serve_token is not None:
            named.setdefault("default", self.serve_token.get_secret_value())
        return named or None

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        """A folder, or s3://BUCKET[/PREFIX] with a valid bucket name (``s3:/x`` is not a folder named so)."""
        if v is None or not (v.lower().startswith("s3:") or "://" in v):
            return v
        parsed = urlsplit(v)
        if parsed.scheme != "s3" or not _BUCKET.fullmatch(parsed.netloc) or not v.startswith("s3://"):
            raise ValueError(
                "expected a folder or s3://BUCKET[/PREFIX] (bucket: 3-63 lowercase letters, digits, dots or hyphens)"
            )
        return v

    @classmethod
    def load(cls, env_file: str | os.PathLike | None = None) -> Settings:
        """Read the environment and the settings file (``env_file`` or $FLEET_ENV_FILE), which must exist if named."""
        env_file = env_file or os.environ.get(ENV_FILE_VAR) or None
        kwargs: dict[str, Any] = {}
        if env_file is not None:
            path = Path(env_file)
            if not path.is_file():
                raise SettingsError(f"{ENV_FILE_VAR}={env_file}: no such settings file")
            kwargs["_env_file"] = path  # pydantic-settings' own keyword
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            where = f" (environment or {env_file})" if env_file else " (environment)"
            lines = []
            for e in exc.errors():
                var = str(e["loc"][0]) if e["loc"] else "?"
                shown = "**********" if _is_secret(var) else repr(e.get("input"))
                lines.append(f"  - {var.upper()}={shown}: {e['msg']}")
            raise SettingsError("invalid settings" + where + ":\n" + "\n".join(lines)) from None

    # -- derived locations
    @property
    def home_found(self) -> bool:
        """The home was named (``FLEET_HOME``) or found from the current folder (``fleet.core.discovery``)."""
        return "home" in self.model_fields_set or discovery.find_root() is not None

    @property
    def mlflow_server(self) -> bool:
        """MLflow is tracked by a server (which places artifacts), not a database file or URI of its own."""
        return urlsplit(self.tracking_uri).scheme in ("http", "https", "databricks")

    @property
    def store_url(self) -> str:
        return self.store or str(self.home / "store")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def artifacts(self) -> str | None:
        """Artifact root for new experiments: set, None when a tracking server decides, else under the home.

        With a database URI (the embedded SQLite, or one exported by ``apply()``), MLflow's own default would
        be ``./mlruns`` of whatever folder the command runs in."""
        if self.artifact_root:
            return self.artifact_root
        return None if self.mlflow_server else str(self.home / "mlflow" / "artifacts")

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def data_root_paths(self) -> list[Path] | None:
        """``data_roots`` as folders, or None when any path may be read."""
        if not self.data_roots:
            return None
        return [Path(p).expanduser().resolve() for p in self.data_roots.split(os.pathsep) if p.strip()]

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    def exported(self) -> dict[str, str]:
        """The variables the libraries read (Prefect, MLflow, boto3), secrets included: for os.environ only."""
        pairs = {
            "FLEET_HOME": str(self.home),
            "FLEET_STORE": self.store,
            "FLEET_ARTIFACT_ROOT": self.artifact_root,
            "FLEET_TASK_RUNNER": self.task_runner,
            "FLEET_COMPUTE_SLOTS": str(self.compute_slots),
            "FLEET_TRAIN_WAIT_S": str(self.train_wait_s),
            "FLEET_DATA_ROOTS": self.data_roots,
            "FLEET_DASK_ADDRESS": self.dask_address,
            "AWS_ENDPOINT_URL": self.s3_endpoint_url,
            "AWS_DEFAULT_REGION": self.aws_region,
            "AWS_PROFILE": self.aws_profile,
            "AWS_SHARED_CREDENTIALS_FILE": self.aws_shared_credentials_file,
            "PREFECT_API_URL": self.prefect_api_url,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_tracking_username,
        }
        for var, secret in (
            ("PREFECT_API_KEY", self.prefect_api_key),
            ("PREFECT_API_AUTH_STRING", self.prefect_api_auth_string),
            ("MLFLOW_TRACKING_PASSWORD", self.mlflow_tracking_password),
            ("MLFLOW_TRACKING_TOKEN", self.mlflow_tracking_token),
        ):
            pairs[var] = secret.get_secret_value() if secret is not None else None
        return {k: v for k, v in pairs.items() if v}

    def public(self) -> dict[str, str | None]:
        """Every setting with secrets masked: safe to print or log."""
        out = {}
        for name in type(self).model_fields:
            v = getattr(self, name)
            out[name] = "**********" if isinstance(v, SecretStr) else (None if v is None else str(v))
        out["store (effective)"] = self.store_url
        out["mlflow tracking (effective)"] = self.tracking_uri
        out["prefect (effective)"] = self.prefect_api_url or "temporary local server"
        return out

    def apply(self) -> Settings:
        """Create the home, export the settings for the libraries and point MLflow at its store.

        Call before importing prefect: Prefect reads its settings at import."""
        if not self.mlflow_tracking_uri:
            create_sqlite_store(self.home / "mlflow" / "mlflow.db")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        os.environ.update(self.exported())
        compute.configure(self.compute_slots)
        os.environ.setdefault("PREFECT_HOME", str(self.prefect_home))
        # Hub models are only fetched when no local copy exists; never phone home for telemetry.
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
        # Artifact downloads are small (records, adapters): no progress bars in command output and logs.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # A lost tracking server: retry with backoff for about half a minute, then a clear error
        # (MLflow's defaults retry for minutes); the stage's own retries come on top.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "fleet")  # the library's warnings in Prefect's logs
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The temporary server's first start migrates a new database: on 2 busy cores that can pass 20 s.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return self

    def store_handle(self):
        from fleet.core.storage import open_store

        return open_store(self.store_url)


class SettingsError(ValueError):
    pass


_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _parse_tokens(raw: str) -> dict[str, str]:
    """``NAME=TOKEN[,NAME=TOKEN...]`` as a dict; names are plain words, tokens at least 16 characters and
    distinct (the messages never repeat a token)."""
    out: dict[str, str] = {}
    for i, pair in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        name, sep, token = pair.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not _CLIENT_NAME.fullmatch(name):
            raise ValueError(f"entry {i + 1}: expected NAME=TOKEN with NAME of letters, digits, '_', '.', '-'")
        if len(token) < 16:
            raise ValueError(f"{name}: its token must be at least 16 characters")
        if name in out or token in out.values():
            raise ValueError(f"{name}: each client needs its own name and its own token")
        out[name] = token
    return out


def _is_secret(var: str) -> bool:
    for name, f in Settings.model_fields.items():
        names = [name, *(getattr(f.validation_alias, "choices", None) or [])]
        if var.lower() in [str(n).lower() for n in names]:
            return "SecretStr" in str(f.annotation)
    return True  # unknown: do not show it


def create_sqlite_store(db: Path) -> None:
    """Create MLflow's SQLite database at ``db`` once, atomically: built under a temporary name, then renamed.

    Processes that start on a new home at once (Dask workers, two `fleet run`) would otherwise all run
    MLflow's migrations on one new file, and all but one fail ("Online migration expected to match one row").
    """
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    store = SqlAlchemyStore(f"sqlite:///{tmp}", str(db.parent / "artifacts"))
    store.engine.dispose()
    if db.exists():  # another process was first: use its database
        tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, db)
