"""Start and stop a real `prefect server start` on a free loopback port, with its own SQLite database.

Used by the integration tests and benchmarks that need schedules and event triggers, which the
temporary in-process server does not run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.health import ServerError, free_port, wait_http


@dataclass
class PrefectServer:
    url: str  # the API URL, http://127.0.0.1:PORT/api
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """Kill the server and its children at once, as a crash would (the database stays)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_prefect_server(folder: Path, timeout_s: float = 180, port: int | None = None) -> PrefectServer:
    """A server on ``port`` (default: a free one) with its database in ``folder`` (kept across restarts)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "server-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = folder / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so kill() reaches the server's children
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", timeout_s, "prefect server", proc, log)
    except ServerError:
        proc.kill()
        raise
    return PrefectServer(url, proc, log)
