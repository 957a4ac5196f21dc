"""The kinds of specialist the fleet knows, by the ``task`` of the fleet file, and the fleet file read with them.

A kind owns its task: its spec model (section, defaults, baselines, gate metrics) and its implementation of
:class:`SpecialistKind`. Adding a kind is adding it here (``register``); nothing outside ``fleet.kinds``
knows a task by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleet.core import spec as fleetfile
from fleet.core.spec import FleetSpec, SpecialistSpec
from fleet.kinds.base import SpecialistKind

DEFAULT_TASK = "text-classification"  # a specialist without ``task:`` is a classifier
_EXTRA: dict[str, type[SpecialistKind]] = {}  # kinds registered at run time (plugins, tests)


def registry() -> dict[str, type[SpecialistKind]]:
    """Every kind this fleet knows, by task name."""
    from fleet.kinds.classification import TextClassification
    from fleet.kinds.generation import TextGeneration

    return {TextClassification.task: TextClassification, TextGeneration.task: TextGeneration, **_EXTRA}


def register(kind: type[SpecialistKind]) -> None:
    """Make ``kind`` known under its ``task`` (for a kind that lives outside this package)."""
    _EXTRA[kind.task] = kind


def kind_of(spec: SpecialistSpec | str) -> SpecialistKind:
    """The kind that implements ``spec.task`` (or a task name)."""
    task = spec if isinstance(spec, str) else spec.task
    kinds = registry()
    if task not in kinds:
        raise ValueError(f"task {task!r}: not a kind of specialist this fleet knows ({', '.join(kinds)})")
    return kinds[task]()


def spec_models() -> dict[str, type[SpecialistSpec]]:
    """Each task's spec model: what its specialists' settings are validated with."""
    return {task: kind.spec_model for task, kind in registry().items()}


def parse_fleet(
    raw: Any, source: str = "<memory>", base_dir: Path | None = None, data_roots: Sequence[Path] | None = None
) -> FleetSpec:
    """A parsed fleet document validated with every kind's spec (:func:`fleet.core.spec.parse_fleet`)."""
    return fleetfile.parse_fleet(raw, spec_models(), DEFAULT_TASK, source, base_dir, data_roots)


def load_fleet(path: str | Path, data_roots: Sequence[Path] | None = None) -> FleetSpec:
    """Read and validate a fleet file with every kind's spec; ``data_roots``: the only folders local data
    sources may come from (None: anywhere, for a fleet file of one's own)."""
    return fleetfile.load_fleet(path, spec_models(), DEFAULT_TASK, data_roots)
