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
    from fleet.settings import Settings, SettingsError

    try:
        return Settings.load().apply()
    except (SettingsError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        _fail(f"settings: {exc}")


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


@app.command()
def train(
    fleet: Path = FleetOpt,
    only: Optional[list[str]] = typer.Option(None, "--only", help="Train only this specialist (repeatable)."),
) -> None:
    """Curate and fine-tune only: no evaluation, no registration (the next `fleet run` does those).

    Safe under `accelerate launch --multi_gpu` or `torchrun` (several GPUs of one node): the main process
    curates first, every process trains on its share of each batch, and only the main process stores the model.
    """
    settings = _settings()
    _, selected = _load(fleet, only)
    import torch
    from accelerate import PartialState

    from fleet import curation, training

    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, ranks of a launch talk over gloo
    store = settings.store_handle()
    for s in selected:
        with state.main_process_first():  # the others then find the same data version stored
            ds = curation.curate(s, store)
        try:
            info = training.ensure_trained(s, store, ds.version, settings.runs_dir)
        except training.TrainingError as exc:
            _fail(str(exc))
        if state.is_main_process:
            how = "already stored" if info["reused"] else f"trained by {info.get('world_size', 1)} process(es)"
            out.print(f"{s.name}: data {ds.version}, model {info['training_key']} {how}", highlight=False)


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
    log: bool = typer.Option(True, help="Append the predictions to the specialist's traffic log (for drift)."),
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
    if log:
        from fleet import traffic
        from fleet.settings import Settings

        served = version or _alias_version(name, alias)
        traffic.log_predictions(Settings.load().store_handle(), name, list(texts), pred["label"].tolist(),
                                pred["score"].tolist(), served)


def _alias_version(name: str, alias: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


@app.command()
def feedback(name: str = typer.Argument(..., help="The specialist."),
             file: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet with text and label columns."),
             text_column: str = typer.Option("text"), label_column: str = typer.Option("label")) -> None:
    """Store labelled feedback for a specialist (redacted, date-partitioned); retraining merges it."""
    settings = _settings()
    from fleet import traffic
    from fleet.curation import CurationError, load_raw
    from fleet.spec import DataSpec

    try:
        raw = load_raw(DataSpec(source=str(file.resolve()), text_column=text_column, label_column=label_column))
    except CurationError as exc:
        _fail(str(exc))
    rows = [{"text": str(t), "label": str(lab)} for t, lab in zip(raw["text"], raw["label"]) if str(t).strip()]
    key = traffic.append(settings.store_handle(), "feedback", name, rows)
    out.print(f"{name}: {len(rows)} feedback row(s) stored at {key}")


@app.command()
def simulate(name: str = typer.Argument(..., help="The specialist whose traffic is simulated."),
             shift: str = typer.Option("none", help="none (held-out data), prior (label mix changed), domain."),
             from_: Optional[str] = typer.Option(None, "--from", help="domain: the specialist whose data to send."),
             rows: int = typer.Option(200, help="Rows in the window."),
             seed: int = typer.Option(0), fleet: Path = FleetOpt) -> None:
    """Write a simulated traffic window, scored by the champion, to the traffic log."""
    settings = _settings()
    spec, _ = _load(fleet, [name])
    from fleet.monitoring import MonitorError
    from fleet.monitoring import simulate as do_simulate

    other = None
    if shift == "domain":
        others = [s for n, s in spec.specialists.items() if n != name and (from_ is None or n == from_)]
        if not others:
            _fail(f"--shift domain: no other specialist{' named ' + from_ if from_ else ''} in {fleet}")
        other = others[0]
    try:
        key = do_simulate(spec.specialists[name], settings.store_handle(), shift, rows, seed, other)
    except (MonitorError, ValueError) as exc:
        _fail(str(exc))
    out.print(f"{name}: {rows} simulated rows (shift {shift}) written to {key}")


@app.command()
def monitor(fleet: Path = FleetOpt,
            only: Optional[list[str]] = typer.Option(None, "--only", help="Monitor only this specialist.")) -> None:
    """Check each specialist's latest traffic window for drift; emit a Prefect event when it drifted."""
    _settings()
    _load(fleet, only)
    from flows.monitor import monitor_fleet_flow

    for r in monitor_fleet_flow(fleet_file=str(fleet.resolve()), only=only or None):
        out.print(f"{r['specialist']}: {r['status']}" + (f" (fired: {', '.join(r['fired'])}; event {r['event_id']})"
                                                          if r.get("event_id") else "") + f"  report {r['report_id']}")


@app.command()
def serve(fleet: Path = FleetOpt,
          train_cron: Optional[str] = typer.Option("0 3 * * *", help="Cron of the fleet training deployment."),
          limit: int = typer.Option(4, help="Flow runs this process runs at once.")) -> None:
    """Serve every deployment (schedules, the drift trigger) from this process; needs a Prefect server."""
    _settings()
    _load(fleet, None)
    if not os.environ.get("PREFECT_API_URL"):
        err.print("[yellow]warning:[/] PREFECT_API_URL is not set: schedules and event triggers need a Prefect "
                  "server (`prefect server start`); the temporary local server runs neither.")
    from prefect import serve as prefect_serve

    from flows.deployments import runner_deployments

    prefect_serve(*runner_deployments(str(fleet.resolve()), train_cron or None), limit=limit)


@app.command()
def deploy(pool: str = typer.Option(..., help="The work pool (create it with `prefect work-pool create POOL --type process`)."),
           fleet: Path = FleetOpt,
           train_cron: Optional[str] = typer.Option("0 3 * * *", help="Cron of the fleet training deployment.")) -> None:
    """Register every deployment with a work pool, for `prefect worker start --pool POOL`."""
    _settings()
    _load(fleet, None)
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: deployments for workers live on a Prefect server")
    from flows.deployments import deploy_to_pool

    ids = deploy_to_pool(str(fleet.resolve()), pool, train_cron or None)
    out.print(f"{len(ids)} deployment(s) registered with work pool {pool}")


@app.command("settings")
def show_settings(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Print the effective settings (environment and $FLEET_ENV_FILE), secrets masked."""
    from fleet.settings import Settings, SettingsError

    try:
        pub = Settings.load().public()
    except (SettingsError, ValueError) as exc:
        _fail(f"settings: {exc}")
    if as_json:
        print(json.dumps(pub, indent=2))
        return
    table = Table(title="fleet settings")
    table.add_column("setting")
    table.add_column("value")
    for k, v in pub.items():
        table.add_row(k, "" if v is None else v)
    out.print(table)


def _stack_home() -> Path:
    """FLEET_HOME, also when $FLEET_ENV_FILE names the env file of a stack that is down."""
    from fleet.settings import Settings, SettingsError

    try:
        return Settings.load().home
    except SettingsError:
        return Settings().home


@app.command()
def up(pg_bin: Optional[str] = typer.Option(None, help="PostgreSQL's bin folder (default: $FLEET_PG_BIN, "
                                            "/usr/lib/postgresql/*/bin, PATH).")) -> None:
    """Start a local production-like stack: PostgreSQL, Prefect server, MLflow server, S3 (moto)."""
    from fleet import stack

    home = _stack_home()
    start = time.monotonic()
    try:
        st = stack.up(home, pg_bin, progress=lambda m: err.print(m, highlight=False))
    except stack.StackError as exc:
        _fail(str(exc))
    table = Table(title=f"fleet stack up in {time.monotonic() - start:.1f} s")
    for c in ("service", "pid", "url", "log"):
        table.add_column(c)
    for s in st.services:
        table.add_row(s.name, str(s.pid), s.url, s.log)
    out.print(table)
    out.print(f"Point fleet commands at it:\n  export FLEET_ENV_FILE={stack.env_file(home)}\n"
              f"Prefect UI: {st.env['PREFECT_API_URL'].removesuffix('/api')}   MLflow UI: {st.env['MLFLOW_TRACKING_URI']}\n"
              "Stop it with `fleet down`.", highlight=False, soft_wrap=True)


@app.command()
def down() -> None:
    """Stop the processes `fleet up` started (and only those)."""
    from fleet import stack

    stopped = stack.down(_stack_home(), progress=lambda m: err.print(m, highlight=False))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "no stack is up")


def main() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
