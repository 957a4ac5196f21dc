"""The data flywheel's commands: ``fleet ingest``, ``fleet label``, ``fleet review``, ``fleet audit``.

Registered on the ``fleet`` app by ``cli.main``; the work is ``fleet.labeling``'s, the labelling run a flow.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cli.main import FleetOpt, _fail, _load, _settings, app, out


def _spec(fleet: Path, name: str):
    spec, _ = _load(fleet, [name])
    return spec.specialists[name]


@app.command()
def ingest(
    name: str = typer.Argument(..., help="The specialist."),
    file: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet of unlabelled texts (served requests, exports)."),
    text_column: str = typer.Option("text", help="The input's column."),
    fleet: Path = FleetOpt,
) -> None:
    """Add unlabelled texts to a specialist's pool (redacted); `fleet label` and `fleet review` label them."""
    settings = _settings()
    spec = _spec(fleet, name)
    from fleet.core.spec import DataSpec
    from fleet.data.sources import CurationError, load_raw
    from fleet.labeling import pool

    try:
        raw = load_raw(DataSpec(source=str(file.resolve())), {"text": text_column})
    except CurationError as exc:
        _fail(str(exc))
    texts = [str(t) for t in raw["text"] if isinstance(t, str) and t.strip()]
    key, n = pool.ingest(settings.store_handle(), spec.name, texts, f"ingest:{file.name}")
    if key is None:
        _fail(f"{file}: no text in column {text_column!r}; nothing stored")
    out.print(f"{name}: {n} row(s) stored at {escape(str(key))}; `fleet label {name}` labels the pool", highlight=False)


@app.command()
def label(name: str = typer.Argument(..., help="The specialist."), fleet: Path = FleetOpt) -> None:
    """Teacher-label the specialist's unlabelled pool and rank its review queue (the `label` flow)."""
    _settings()
    _spec(fleet, name)
    from fleet.labeling.ledger import LabelingError
    from flows.label import label_flow

    try:
        result = label_flow(name=name, fleet_file=str(fleet.resolve()))
    except LabelingError as exc:
        _fail(str(exc))
    if result.get("fallback_labels"):
        out.print(f"{name}: {result['fallback_labels']} escalated request(s) labelled by the fallback's answers")
    run = result.get("teacher")
    if run:
        out.print(
            f"{name}: teacher {escape(run['teacher'])} labelled {run['labelled']} of {run['asked']} row(s) "
            f"({run['confident']} confident); {run['unknown_label']} unknown label, {run['failed']} failed; "
            f"{run['tokens_in']}+{run['tokens_out']} tokens, cost {run['cost']:.4f}",
            highlight=False,
        )
    out.print(
        f"{name}: pool {result['pool']}, awaiting the teacher {result['awaiting_teacher']}, review queue "
        f"{result['review_queue']}, human labels {result['human_labels']}, teacher labels {result['teacher_labels']}",
        highlight=False,
    )


def _ask(labels: list[str], guess: str | None) -> tuple[str, str | None]:
    """One decision: (action, label); actions accept, correct, skip, quit."""
    keys = "[a]ccept, [c]orrect, [s]kip, [q]uit" if guess else "[c]orrect (label it), [s]kip, [q]uit"
    while True:
        choice = typer.prompt(keys, default="a" if guess else "c").strip().lower()[:1]
        if choice == "a" and guess:
            return "accept", guess
        if choice in ("s", "q"):
            return {"s": "skip", "q": "quit"}[choice], None
        if choice == "c":
            return "correct", _typed_label(labels)
        out.print("please answer a, c, s or q")


def _typed_label(labels: list[str]) -> str:
    if not labels:
        return typer.prompt("the right answer").strip()
    menu = ", ".join(f"{i} {lab}" for i, lab in enumerate(labels, start=1))
    while True:
        got = typer.prompt(f"label ({menu})").strip()
        if got.isdigit() and 1 <= int(got) <= len(labels):
            return labels[int(got) - 1]
        if got in labels:
            return got
        out.print(f"not a label: {escape(got)}", highlight=False)


def _review_terminal(spec, store, queue, limit: int, reviewer: str) -> None:
    from fleet.kinds import kind_of
    from fleet.labeling import flywheel

    labels = kind_of(spec).labels(spec)
    done = 0
    for r in queue.head(limit).itertuples():
        guess = r.teacher if isinstance(r.teacher, str) else (r.specialist if isinstance(r.specialist, str) else None)
        out.rule(f"{done + 1} of {min(limit, len(queue))}  (priority {r.priority:.2f}: {escape(r.reason)})")
        out.print(escape(r.text), highlight=False)
        out.print(f"specialist: {escape(str(r.specialist))}   teacher: {escape(str(r.teacher))}", highlight=False)
        action, value = _ask(labels, guess)
        if action == "quit":
            break
        flywheel.decide(store, spec.name, r.id, r.text, value, reviewer)
        done += 1
    out.print(f"{spec.name}: {done} decision(s) stored; `fleet review {spec.name}` resumes where you stopped")


@app.command()
def review(
    name: str = typer.Argument(..., help="The specialist."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Rows to review (default: labeling.review_size)."),
    export: Path | None = typer.Option(None, "--export", help="Write the top rows as Label Studio tasks (JSON)."),
    import_: Path | None = typer.Option(None, "--import", help="Apply a Label Studio JSON export of those tasks."),
    reviewer: str = typer.Option("", help="Who is reviewing (default: the login name)."),
    fleet: Path = FleetOpt,
) -> None:
    """Review the rows a human label would help most: in the terminal, or exchanged with Label Studio."""
    settings = _settings()
    spec = _spec(fleet, name)
    from fleet.kinds import kind_of
    from fleet.labeling import flywheel, queue
    from fleet.labeling.ledger import LabelingError

    store = settings.store_handle()
    n = limit or spec.labeling.review_size
    try:
        if import_ is not None:
            if not import_.is_file():
                _fail(f"{import_}: no such file")
            got = flywheel.import_review(spec, store, import_.read_bytes(), str(import_))
            out.print(
                f"{name}: {len(got.events)} label(s) applied from {escape(str(import_))}; {got.unannotated} task(s) "
                f"without an annotation, {got.unchanged} unchanged"
                + (f", {got.stale} older than the decision on record (not applied)" if got.stale else ""),
                highlight=False,
            )
            return
        rows = flywheel.review_queue(spec, store, batch=n)
        if export is not None:
            tasks = queue.export_label_studio(name, rows.head(n), kind_of(spec).labels(spec))
            export.write_text(json.dumps(tasks, indent=2, ensure_ascii=False) + "\n")
            config = export.with_suffix(".label-config.xml")
            config.write_text(queue.label_config(kind_of(spec).labels(spec)) + "\n")
            out.print(
                f"{name}: {len(tasks)} task(s) written to {escape(str(export))} (Label Studio's labelling "
                f"interface: {escape(str(config))}); `fleet review {name} --import EXPORT.json` applies the labels",
                highlight=False,
            )
            return
    except LabelingError as exc:
        _fail(str(exc))
    if rows.empty:
        out.print(f"{name}: the review queue is empty")
        return
    _review_terminal(spec, store, rows, n, reviewer or getpass.getuser())


@app.command()
def audit(
    name: str = typer.Argument(..., help="The specialist (a classifier)."),
    to_review: bool = typer.Option(False, "--to-review", help="Send the flagged rows to the review queue."),
    limit: int = typer.Option(20, "--limit", "-n", help="Rows shown."),
    fleet: Path = FleetOpt,
) -> None:
    """List likely mislabelled training rows of the champion's dataset (cleanlab, out-of-fold predictions)."""
    settings = _settings()
    spec = _spec(fleet, name)
    from fleet.data import versions
    from fleet.labeling import audit as labeling_audit
    from fleet.labeling import flywheel
    from fleet.labeling.ledger import LabelingError

    store = settings.store_handle()
    try:
        champ = flywheel.champion(spec)
        train = versions.load_split(store, name, champ.dataset_version, "train")
        found = labeling_audit.audit(spec, store, train, champ.dataset_version, to_review)
    except LabelingError as exc:
        _fail(str(exc))
    table = Table(title=f"{name}: {len(found.flagged)} likely label issue(s) in {found.rows} training rows")
    for c in ("quality", "given", "suggested", "text"):
        table.add_column(c)
    for r in found.flagged.head(limit).to_dict("records"):
        table.add_row(f"{r['quality']:.3f}", str(r["given"]), str(r["suggested"]), escape(str(r["text"])[:100]))
    out.print(table)
    if to_review:
        out.print(f"{name}: sent to the review queue; `fleet review {name}` shows them")


def status_extras(names: list[str], fleet: Path) -> dict[str, dict]:
    """Per specialist of the fleet file: its review queue's size, the monitor's latest estimated score and its
    latest SLA check (the breaches, or ok; all traffic to the fallback after a quality breach)."""
    import contextlib

    from fleet.core.settings import Settings
    from fleet.core.spec import SpecError
    from fleet.core.storage import get_json
    from fleet.kinds import load_fleet
    from fleet.labeling import flywheel
    from fleet.labeling.ledger import LabelingError
    from fleet.ops import sla

    specs = {}
    with contextlib.suppress(SpecError, OSError):
        specs = load_fleet(fleet).specialists if fleet.exists() else {}
    store = Settings.load().store_handle()
    extras: dict[str, dict] = {}
    for name in names:
        cell: dict = {"review queue": None, "estimated score": None}
        if name in specs:
            with contextlib.suppress(LabelingError):
                cell["review queue"] = flywheel.summary(specs[name], store)["review_queue"]
        key = f"drift/{name}/latest.json"
        if store.exists(key):
            signal = (get_json(store, key).get("signals") or {}).get("estimated_performance")
            cell["estimated score"] = None if not signal else round(float(signal["statistic"]), 4)
        checked = sla.latest(store, name)
        cell["sla"] = None if checked is None else "; ".join(checked.breaches) or "ok"
        if checked is not None and checked.escalate_all:
            cell["sla"] += " (all traffic to the fallback)"
        extras[name] = cell
    return extras
