"""Pictures for people: every figure is drawn with matplotlib's Agg backend and returned as PNG bytes.

They are logged to MLflow, stored beside data sets and drift reports, and embedded in Prefect artifacts.
Figures are made with matplotlib's object API, not pyplot: pyplot keeps global state, which threads
drawing at once (specialists run side by side) would share.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def figure(**kwargs: Any) -> Any:
    """A new figure of its own (no pyplot state), drawn by the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_png(cm: np.ndarray, labels: list[str], title: str) -> bytes:
    fig = figure(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2), dpi=100)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    return to_png(fig)


def bars_png(labels: list[str], counts: Sequence[float], title: str, xlabel: str, ylabel: str) -> bytes:
    fig = figure(figsize=(7, 3.2), dpi=100)
    ax = fig.subplots()
    ax.bar(labels, counts, color="#4C72B0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    return to_png(fig)


def reference_vs_current_png(title: str, panels: list[tuple[str, Any, Any, Any]]) -> bytes:
    """Side-by-side panels of reference vs current: (title, kind, reference, current) with kind
    ``"bars"`` (two dicts of category -> share) or ``"hist"`` (two arrays of values in [0, 1] or lengths)."""
    fig = figure(figsize=(4.5 * len(panels), 3.2), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, kind, ref, cur) in zip(axes[0], panels):
        if kind == "bars":
            cats = list(ref)
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [ref[c] for c in cats], 0.4, label="reference")
            ax.bar(x + 0.2, [cur.get(c, 0) for c in cats], 0.4, label="current")
            ax.set_xticks(x, cats)
        else:
            top = max(1.0, float(np.max(ref, initial=0)), float(np.max(cur, initial=0)))
            bins = np.linspace(0, top, 21)
            ax.hist(ref, bins=bins, alpha=0.6, density=True, label="reference")
            ax.hist(cur, bins=bins, alpha=0.6, density=True, label="current")
        ax.set_title(name)
        ax.legend()
    fig.suptitle(title)
    return to_png(fig)


def cumulative_cost_png(series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> bytes:
    """One panel per name: cumulative cost by month, the fleet (solid) against all-fallback (dashed)."""
    names = list(series)
    fig = figure(figsize=(3.6 * max(len(names), 1), 3.2), dpi=100)
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)
    for ax, name in zip(axes[0], names):
        fleet, fallback = series[name]
        months = np.arange(1, len(fleet) + 1)
        ax.plot(months, fleet, label="fleet", color="#4C72B0")
        ax.plot(months, fallback, label="all-fallback", color="#C44E52", linestyle="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("month")
        ax.set_ylabel("cumulative cost")
        ax.legend(fontsize=7)
    return to_png(fig)
