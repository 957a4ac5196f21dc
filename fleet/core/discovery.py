"""Where a fleet lives: found the way git finds its repository.

From a folder (the current one by default) up to the filesystem's root, the first folder that holds a
fleet's home (``.fleet/``), a fleet file (``fleet.yaml``) or this project's layout (``deployments/fleet.yaml``)
is the fleet's root: its home is ``ROOT/.fleet`` and its fleet file the one found there. ``FLEET_HOME`` and
``--fleet`` (or ``FLEET_FILE``) override what is found. A command run where nothing is found says so, instead
of making an empty home in whatever folder it was run from.
"""

from __future__ import annotations

from pathlib import Path

HOME_NAME = ".fleet"
FLEET_FILES = ("fleet.yaml", "deployments/fleet.yaml")  # looked for in this order in each folder


def find_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``.fleet/`` or a fleet file; None if there is none."""
    here = Path(start or Path.cwd()).expanduser().resolve()
    for folder in (here, *here.parents):
        if (folder / HOME_NAME).is_dir() or any((folder / name).is_file() for name in FLEET_FILES):
            return folder
    return None


def fleet_file(root: Path) -> Path | None:
    """The fleet file in ``root`` (``fleet.yaml``, else ``deployments/fleet.yaml``), if there is one."""
    return next((root / name for name in FLEET_FILES if (root / name).is_file()), None)


def default_home() -> Path:
    """``.fleet`` in the root found from the current folder; in the current folder when there is none (a new
    fleet: ``fleet run --fleet FILE`` makes its home there)."""
    return (find_root() or Path.cwd()) / HOME_NAME
