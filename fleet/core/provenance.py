"""Where a version's code came from: the git commit of the checkout, or the installed package's version."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def code_version() -> str:
    """The git commit of the checkout this code runs from, or the installed package's version."""
    root = Path(__file__).resolve().parents[2]  # fleet/core/provenance.py -> the checkout
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return "specialist-fleet==" + version("specialist-fleet")
        except PackageNotFoundError:
            return "unknown"
