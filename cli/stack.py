"""`fleet up` / `fleet down`: a production-like stack on this machine, without Docker.

- PostgreSQL: a private cluster in a temporary folder (``initdb`` + ``pg_ctl``), on a free loopback port,
  with one database for Prefect and one for MLflow. PostgreSQL refuses to run as root, so under root the
  server binaries run as the ``postgres`` user (``runuser``); otherwise as the current user.
- ``prefect server start`` on that PostgreSQL.
- ``mlflow server`` on that PostgreSQL, proxying artifacts to ``s3://BUCKET/mlflow-artifacts``.
- moto's S3 server standing in for S3 (the bucket is created at start): data sets, models, traffic.

Every process is started in its own session and recorded (PID, process group, start time) in
``FLEET_HOME/stack/stack.json``; ``fleet down`` stops exactly those, and only if the PID still belongs to
the process that was started. The settings for clients are written to ``FLEET_HOME/stack/fleet.env``:
``export FLEET_ENV_FILE=...`` points every ``fleet`` command (and flows, workers) at the stack.

This is a test and try-out stack: PostgreSQL trusts loopback connections and S3 takes any key. The
production equivalents are infra/docker-compose.yml and infra/kubernetes/.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cli.health import ServerError, free_port, tail, wait_http

BUCKET = "fleet"
PG_USER = "postgres"


class StackError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    pid: int
    create_time: float
    url: str = ""
    log: str = ""
    pgid: int | None = None  # set when the process leads its own process group


@dataclass
class Stack:
    folder: str
    pg_data: str
    pg_bin: str
    pg_port: int
    pg_as: str | None  # the user PostgreSQL runs as, when it is not the current one
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started_s: float = 0.0

    def save(self) -> None:
        tmp = Path(self.folder) / "stack.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(Path(self.folder) / "stack.json")

    @classmethod
    def read(cls, folder: Path) -> Stack | None:
        path = folder / "stack.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["services"] = [Service(**s) for s in data["services"]]
        return cls(**data)


def stack_folder(home: Path) -> Path:
    return Path(home) / "stack"


def env_file(home: Path) -> Path:
    return stack_folder(home) / "fleet.env"


def find_pg_bin(explicit: str | None = None) -> Path | None:
    """PostgreSQL's server binaries: ``explicit``, $FLEET_PG_BIN, Debian's /usr/lib/postgresql/N/bin, or PATH."""
    if explicit:
        ok = (Path(explicit) / "initdb").is_file() and (Path(explicit) / "pg_ctl").is_file()
        return Path(explicit) if ok else None
    candidates = [c for c in [os.environ.get("FLEET_PG_BIN")] if c]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    candidates += [str(Path(on_path).parent)] if on_path else []
    for c in candidates:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def _record(name: str, pid: int, url: str = "", log: str = "", own_group: bool = True) -> Service:
    import psutil

    return Service(name, pid, psutil.Process(pid).create_time(), url, log, pid if own_group else None)


def _serve(
    stack: Stack,
    procs: list,
    name: str,
    cmd: list[str],
    env: dict,
    url: str,
    health: str,
    timeout_s: float,
    label: str = "",
) -> None:
    """Start a server in its own process group (`down` stops it and its workers together), record it, and
    wait until ``url + health`` answers."""
    log = Path(stack.folder) / "logs" / f"{name}.log"
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    stack.services.append(_record(name, proc.pid, url, str(log)))
    procs.append(proc)
    try:
        wait_http(f"{url}{health}", timeout_s, label or name, proc, log)
    except ServerError as exc:
        raise StackError(str(exc)) from None


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise StackError(
            f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{(r.stderr or r.stdout).strip()}"
            + (f"\nlog {log}:\n{tail(log)}" if log else "")
        )


def up(home: Path, pg_bin: str | None = None, timeout_s: float = 240, progress=print) -> Stack:
    """Start the stack; on any failure stop what was started and raise StackError. Returns the recorded stack."""
    t0 = time.monotonic()
    folder = stack_folder(home)
    existing = Stack.read(folder)
    if existing is not None:
        alive = [s.name for s in existing.services if _alive(s)]
        if alive:
            raise StackError(
                f"a stack is already up ({', '.join(alive)}; see {folder / 'stack.json'}): run `fleet down` first"
            )
        down(home, progress=lambda *_: None)  # leftovers of a crashed stack
    bin_dir = find_pg_bin(pg_bin)
    if bin_dir is None:
        where = f"--pg-bin {pg_bin}" if pg_bin else "$FLEET_PG_BIN, /usr/lib/postgresql/*/bin or PATH"
        raise StackError(
            f"PostgreSQL's server binaries (initdb, pg_ctl) were not found in {where}: "
            "install them (Debian: apt-get install postgresql)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    pg_as = PG_USER if os.geteuid() == 0 else None
    if pg_as and shutil.which("runuser") is None:
        raise StackError("running as root, PostgreSQL must run as the postgres user, but `runuser` is missing")
    pg_data = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    stack = Stack(str(folder), str(pg_data), str(bin_dir), free_port(), pg_as)
    procs: list[subprocess.Popen] = []
    try:
        _start_postgres(stack, progress)
        stack.save()
        s3_url = _start_s3(stack, procs, progress, timeout_s)
        stack.save()
        prefect_url = _start_prefect(stack, procs, progress, timeout_s)
        stack.save()
        mlflow_url = _start_mlflow(stack, procs, s3_url, progress, timeout_s)
        stack.env = {
            "FLEET_HOME": str(Path(home).resolve()),
            "FLEET_STORE": f"s3://{BUCKET}/store",
            "AWS_ENDPOINT_URL": s3_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "aws-credentials"),
            "PREFECT_API_URL": prefect_url,
            "MLFLOW_TRACKING_URI": mlflow_url,
        }
        stack.started_s = round(time.monotonic() - t0, 1)
        stack.save()
        env_file(home).write_text(
            "# written by `fleet up`; use it with: export FLEET_ENV_FILE="
            + str(env_file(home))
            + "\n"
            + "".join(f"{k}={v}\n" for k, v in stack.env.items())
        )
    except BaseException:
        stack.save()
        down(home, progress=lambda *_: None)
        raise
    return stack


def _start_postgres(stack: Stack, progress) -> None:
    data, bin_dir, port = Path(stack.pg_data), Path(stack.pg_bin), stack.pg_port
    if stack.pg_as:
        shutil.chown(data, user=stack.pg_as)
    progress(f"postgres: initdb {data}")
    _run(
        _as_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync"],
            stack.pg_as,
        ),
        "initdb",
    )
    log = data / "server.log"
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    progress(f"postgres: starting on 127.0.0.1:{port}")
    _run(
        _as_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
            stack.pg_as,
        ),
        "pg_ctl start",
        log,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    stack.services.append(
        _record("postgres", pid, f"postgresql://{PG_USER}@127.0.0.1:{port}", str(log), own_group=False)
    )
    for db in ("prefect", "mlflow"):
        _run(
            _as_user([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, db], None),
            f"createdb {db}",
        )


def _start_s3(stack: Stack, procs, progress, timeout_s) -> str:
    folder = Path(stack.folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    progress(f"s3 (moto): starting on {url}")
    _serve(
        stack,
        procs,
        "s3",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        dict(os.environ),
        url,
        "/moto-api/",
        timeout_s,
        "s3 (moto)",
    )
    (folder / "aws-credentials").write_text(
        "[default]\naws_access_key_id = fleet-local\naws_secret_access_key = fleet-local-secret\n"
    )
    import boto3

    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="fleet-local",
        aws_secret_access_key="fleet-local-secret",
    ).create_bucket(Bucket=BUCKET)
    return url


def _clean_env(folder: Path) -> dict:
    """The servers' environment: this one without client settings that would point them at themselves."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_", "FLEET_")) and k != "PREFECT_HOME"
    }
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_ENABLE_TELEMETRY="false",
        AWS_SHARED_CREDENTIALS_FILE=str(folder / "aws-credentials"),
        AWS_DEFAULT_REGION="us-east-1",
    )
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(k, None)
    return env


def _start_prefect(stack: Stack, procs, progress, timeout_s) -> str:
    folder = Path(stack.folder)
    port = free_port()
    env = _clean_env(folder)
    env.update(
        PREFECT_HOME=str(folder / "prefect-server"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{stack.pg_port}/prefect",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}/api"
    progress(f"prefect server: starting on {url} (database: postgres/prefect)")
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    _serve(stack, procs, "prefect", cmd, env, url, "/health", timeout_s, "prefect server")
    return url


def _start_mlflow(stack: Stack, procs, s3_url: str, progress, timeout_s) -> str:
    folder = Path(stack.folder)
    port = free_port()
    env = _clean_env(folder)
    env["MLFLOW_S3_ENDPOINT_URL"] = s3_url
    url = f"http://127.0.0.1:{port}"
    progress(f"mlflow server: starting on {url} (backend: postgres/mlflow, artifacts: s3://{BUCKET}/mlflow-artifacts)")
    backend = f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{stack.pg_port}/mlflow"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow-artifacts",
        "--workers",
        "1",
    ]
    _serve(stack, procs, "mlflow", cmd, env, url, "/health", timeout_s, "mlflow server")
    return url


def _alive(s: Service) -> bool:
    """The recorded process is running (not a zombie) and is the one that was started (same start time)."""
    import psutil

    try:
        p = psutil.Process(s.pid)
        return abs(p.create_time() - s.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def members(s: Service) -> list[int]:
    """The PIDs of a started service now: the process, its descendants and, when it leads one, its group."""
    import psutil

    if not _alive(s):
        return []
    pids = {s.pid}
    with suppress(psutil.Error):
        pids |= {c.pid for c in psutil.Process(s.pid).children(recursive=True)}
    if s.pgid is not None:
        for p in psutil.process_iter(["pid"]):
            with suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(p.pid) == s.pgid:
                    pids.add(p.pid)
    return sorted(pids)


def _gone(pids: list[int]) -> bool:
    import psutil

    for pid in pids:
        with suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def _stop(s: Service, wait_s: float = 20) -> None:
    pids = members(s)
    if not pids:
        return
    if s.pgid is not None:
        with suppress(ProcessLookupError):
            os.killpg(s.pgid, signal.SIGTERM)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not _gone(pids):
        time.sleep(0.2)
    if not _gone(pids):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def down(home: Path, progress=print) -> list[str]:
    """Stop the recorded processes (only those still the same processes), drop PostgreSQL's temporary cluster."""
    folder = stack_folder(home)
    stack = Stack.read(folder)
    if stack is None:
        return []
    stopped = []
    for s in reversed(stack.services):
        if not _alive(s):
            continue
        progress(f"{s.name}: stopping (pid {s.pid})")
        if s.name == "postgres":
            subprocess.run(
                _as_user(
                    [str(Path(stack.pg_bin) / "pg_ctl"), "-D", stack.pg_data, "-m", "fast", "-w", "-t", "30", "stop"],
                    stack.pg_as,
                ),
                capture_output=True,
            )
        _stop(s)
        stopped.append(s.name)
    with suppress(OSError):  # keep PostgreSQL's log; its temporary cluster goes
        shutil.copy(Path(stack.pg_data) / "server.log", folder / "logs" / "postgres.log")
    shutil.rmtree(stack.pg_data, ignore_errors=True)
    for name in ("stack.json", "fleet.env", "aws-credentials"):
        with suppress(FileNotFoundError):
            (folder / name).unlink()
    return stopped
