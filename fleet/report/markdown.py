"""Markdown reports from Jinja2 templates (``fleet/report/templates/*.md.j2``): the data card, the evaluation
and decision record, the drift report and the model card. Prefect shows them as artifacts, MLflow keeps
them with the version, and the object store keeps them beside data sets and drift reports."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _ci(m: Any) -> str:
    """A metric with its interval: ``0.9530 [0.919, 0.982]``."""
    if m is None:
        return ""
    value, ci = (m.value, m.ci) if hasattr(m, "value") else (m, None)
    return f"{value:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.4f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(v: Any, fmt: str = "g") -> str:
    return "" if v is None else format(v, fmt)


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters.update(ci=_ci, cell=_cell, num=_num)
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)
