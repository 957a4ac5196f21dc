"""The kinds of specialist the fleet knows, by the ``task`` of the fleet file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.kinds.base import SpecialistKind

if TYPE_CHECKING:
    from fleet.spec import SpecialistSpec


def _registry() -> dict[str, type[SpecialistKind]]:
    from fleet.kinds.classification import TextClassification
    from fleet.kinds.generation import TextGeneration

    return {TextClassification.task: TextClassification, TextGeneration.task: TextGeneration}


def kind_of(spec: SpecialistSpec | str) -> SpecialistKind:
    """The kind that implements ``spec.task`` (or a task name)."""
    task = spec if isinstance(spec, str) else spec.task
    kinds = _registry()
    if task not in kinds:
        raise ValueError(f"task {task!r}: not a kind of specialist this fleet knows ({', '.join(kinds)})")
    return kinds[task]()
