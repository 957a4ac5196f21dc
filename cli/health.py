"""Waiting for a server to come up: one helper for every server the fleet starts or tests start."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from contextlib import suppress
from pathlib import Path


class ServerError(RuntimeError):
    """A server did not start; the message names it, where it was expected and the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: str | Path | None, n: int = 15) -> str:
    if path is None:
        return ""
    with suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    return ""


def wait_http(
    url: str,
    timeout_s: float,
    name: str = "server",
    proc: subprocess.Popen | None = None,
    log: str | Path | None = None,
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits, with the end of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{name} exited with code {proc.returncode} while starting; its log {log}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise ServerError(f"{name} did not answer on {url} within {timeout_s:.0f} s; its log {log}:\n{tail(log)}")
