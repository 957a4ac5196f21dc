"""The ``fleet`` command.

Settings are read here, at the entry point, and exported to the environment
before Prefect or the flows are imported, so that Prefect's home and MLflow's
store land under ``FLEET_HOME``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Train, evaluate and register a fleet of specialist models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
# Piped output (CI logs, `make demo | tee`) gets a wide table rather than rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

DEFAULT_FLEET = os.environ.get("FLEET_FILE", "deployments/fleet.yaml")
FleetOpt = typer.Option(DEFAULT_FLEET, "--fleet", "-f", help="The fleet file (default: $FLEET_FILE or deployments/fleet.yaml).")


def _settings():
    from fleet.settings import Settings

    return Settings().apply()


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(fleet: Path, only: list[str] | None):
    """Parse the fleet file and check every selected specialist's data and base model, before any work."""
    from fleet.curation import CurationError, check_source
    from fleet.spec import SpecError, load_fleet
    from fleet.training import TrainingError, resolve_base_model

    try:
        spec = load_fleet(fleet)
        selected = spec.select(only)
    except SpecError as exc:
        _fail(str(exc))
    problems = []
    for s in selected:
        try:
            check_source(s.data)
        except CurationError as exc:
            problems.append(f"specialists.{s.name}.data.source: {exc}")
        try:
            resolve_base_model(s.base_model)
        except TrainingError as exc:
            problems.append(f"specialists.{s.name}.base_model: {exc}")
    if problems:
        _fail(f"fleet file {fleet}:\n" + "\n".join(f"  - {p}" for p in problems))
    return spec, selected


@app.command()
def validate(fleet: Path = FleetOpt) -> None:
    """Check the fleet file, the data sources and the base models; do no work."""
    _, selected = _load(fleet, None)
    out.print(f"{fleet}: {len(selected)} specialist(s) OK: {', '.join(s.name for s in selected)}")


@app.command()
def run(
    fleet: Path = FleetOpt,
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only this specialist (repeatable)."),
    trigger: str = typer.Option("manual", help="Why this run happens: manual, schedule or drift."),
) -> None:
    """Curate, fine-tune, evaluate and register each specialist (skipping what is up to date)."""
    if trigger not in ("manual", "schedule", "drift"):
        _fail(f"--trigger {trigger}: must be manual, schedule or drift")
    _settings()
    _load(fleet, only)
    start = time.monotonic()
    from fleet.results import FleetRunError
    from flows.fleet import fleet_flow

    state = fleet_flow(fleet_file=str(fleet.resolve()), only=only or None, trigger=trigger, return_state=True)
    result = state.result(raise_on_failure=False)
    rows = result.results if isinstance(result, FleetRunError) else result
    if not isinstance(rows, list):
        _fail(f"the fleet run failed: {result}", code=1)
    _print_rows(rows)
    out.print(f"fleet run finished in {time.monotonic() - start:.1f} s")
    if isinstance(result, FleetRunError):
        _fail(str(result), code=1)


def _print_rows(rows: list[dict]) -> None:
    table = Table(title="fleet run")
    cols = ["specialist", "status", "version", "alias", "verdict", "challenger_macro_f1", "champion_macro_f1",
            "baseline_macro_f1", "dataset_version"]
    for c in cols:
        table.add_column(c.replace("_macro_f1", " F1"))
    for r in rows:
        if r["status"] == "failed":
            table.add_row(r["specialist"], "[red]failed[/]", *[""] * (len(cols) - 2))
            continue
        table.add_row(*[("" if r.get(c) is None else str(r.get(c))) for c in cols])
    out.print(table)
    for r in rows:
        if r["status"] == "failed":
            err.print(f"[red]{r['specialist']}[/]: {r.get('error')}", highlight=False)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fleet: Path = FleetOpt,
) -> None:
    """The champion of each specialist, read from the MLflow registry."""
    _settings()
    from fleet.registry import RegistryError, fleet_status, registered_names
    from fleet.spec import SpecError, load_fleet

    names = []
    try:
        names = list(load_fleet(fleet).specialists) if fleet.exists() else []
    except SpecError:
        pass
    try:
        names += [n for n in registered_names() if n not in names]
        rows = fleet_status(names)
    except RegistryError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="fleet status: champion vs general baseline (macro-F1, 95% CI; cost per 1,000 predictions)")
    for c in ("specialist", "champion", "macro-F1", "baseline", "baseline macro-F1", "cost/1k", "baseline cost/1k",
              "gain (points)", "points per cost", "dataset", "trained"):
        table.add_column(c)

    def f1(v, ci):
        return "" if v is None else (f"{v:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.4f}")

    def money(v):
        return "" if v is None else f"{v:.6f}"

    for r in rows:
        table.add_row(r["specialist"], r["champion_version"] or "none", f1(r["champion_macro_f1"], r["champion_macro_f1_ci"]),
                      r["baseline"] or "", f1(r["baseline_macro_f1"], r["baseline_macro_f1_ci"]),
                      money(r["champion_cost_per_1k"]), money(r["baseline_cost_per_1k"]),
                      "" if r["gain_points"] is None else f"{r['gain_points']:+.2f}",
                      "" if r["gain_points_per_cost"] is None else f"{r['gain_points_per_cost']:,.0f}",
                      r["dataset_version"] or "", r["last_trained"] or "")
    out.print(table)


@app.command()
def promote(name: str = typer.Argument(..., help="The specialist."),
            version: str = typer.Argument(..., help="The version to make champion.")) -> None:
    """Make a registered version the champion by hand (recorded in the champion history)."""
    _settings()
    from fleet.registry import RegistryError
    from fleet.registry import promote as do_promote

    try:
        do_promote(name, version)
    except RegistryError as exc:
        _fail(str(exc))
    out.print(f"{name}: champion is now version {version}")


@app.command()
def rollback(name: str = typer.Argument(..., help="The specialist.")) -> None:
    """Move the champion back to the previous champion (recorded)."""
    _settings()
    from fleet.registry import RegistryError
    from fleet.registry import rollback as do_rollback

    try:
        old, new = do_rollback(name)
    except RegistryError as exc:
        _fail(str(exc))
    out.print(f"{name}: champion rolled back from version {old} to version {new}")


@app.command()
def predict(
    name: str = typer.Argument(..., help="The specialist."),
    texts: list[str] = typer.Argument(..., help="Texts to classify."),
    alias: str = typer.Option("champion", help="Registry alias to use."),
    version: Optional[str] = typer.Option(None, help="A version number instead of an alias."),
) -> None:
    """Classify texts with a specialist's registered model; prints label, score and text."""
    _settings()
    import mlflow
    from mlflow.exceptions import MlflowException
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the output a clean table of predictions

    uri = f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        _fail(f"{uri}: cannot load ({exc.message.splitlines()[0]}); train it with `fleet run --only {name}`")
    pred = model.predict(list(texts))
    for text, label, score in zip(texts, pred["label"], pred["score"]):
        print(f"{label}\t{score:.4f}\t{text}")  # plain TSV, for pipes


def main() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
