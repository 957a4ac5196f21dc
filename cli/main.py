"""The ``fleet`` command: the app layer, above the flows (cli -> flows -> tasks -> fleet).

Settings are read here, at the entry point, and exported to the environment
before Prefect or the flows are imported, so that Prefect's home and MLflow's
store land under ``FLEET_HOME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.traceback import Traceback

from cli import errors

app = typer.Typer(
    help="Train, evaluate and register a fleet of specialist models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, `make demo | tee`) gets a wide table rather than rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

NO_FLEET = (
    "no fleet here: no .fleet/, fleet.yaml or deployments/fleet.yaml in {where} or a folder above it; run this "
    "in your fleet's folder, or name it with --fleet FILE (or FLEET_FILE) and FLEET_HOME"
)


def _fleet_file(value: Path | None) -> Path:
    """The fleet file: --fleet, else $FLEET_FILE, else the one of the fleet found from the current folder (as
    git finds its repository). A fleet file named from outside a fleet's folder brings its home along: with
    FLEET_HOME unset, the home is the one beside the fleet file (not a new, empty one here)."""
    from fleet.core import discovery

    path = value or (Path(os.environ["FLEET_FILE"]) if os.environ.get("FLEET_FILE") else None)
    if path is None:
        root = discovery.find_root()
        if root is None:
            _fail(NO_FLEET.format(where=Path.cwd()))
        assert root is not None
        return discovery.fleet_file(root) or root / discovery.FLEET_FILES[0]  # a home without a fleet file
    if not os.environ.get("FLEET_HOME") and discovery.find_root() is None:
        folder = path.expanduser().resolve().parent  # a fleet file named explicitly marks its fleet's folder
        os.environ["FLEET_HOME"] = str((discovery.find_root(folder) or folder) / discovery.HOME_NAME)
    return path


FleetOpt = typer.Option(
    None,
    "--fleet",
    "-f",
    callback=_fleet_file,
    help="The fleet file (default: $FLEET_FILE, else fleet.yaml or deployments/fleet.yaml in the nearest folder "
    "at or above this one that has one).",
)


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks with errors (and in Prefect's logs)."),
) -> None:
    if debug:
        os.environ[errors.DEBUG_VAR] = "1"
    else:  # the libraries' notices of their own future changes are for developers, not in a command's output
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _settings(check: bool = False):
    """The settings, applied; ``check``: the store and the servers they name must answer."""
    from fleet.core.settings import Settings, SettingsError

    try:
        settings = Settings.load()
        if not settings.home_found:  # never an empty home made wherever a command happens to run
            _fail(NO_FLEET.format(where=Path.cwd()))
        settings.apply()
    except (SettingsError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        _fail(f"settings: {exc}")
    if check:
        from fleet.core.storage import StorageError, check_conditional_writes
        from fleet.ops.preflight import ServiceError, check_services

        try:
            check_services(settings.store_url, settings.tracking_uri, settings.prefect_api_url)
            if settings.store_url.startswith("s3://"):  # leases rely on them; a local folder always has them
                check_conditional_writes(settings.store_handle())
        except (ServiceError, StorageError) as exc:
            _fail(str(exc))
    return settings


def _fail(message: str, code: int = 2, cause: BaseException | None = None) -> None:
    """Print ``message`` as one error (no markup is read in it) and exit; with --debug, the traceback first."""
    cause = cause or sys.exc_info()[1]
    if errors.debugging() and cause is not None:
        err.print(Traceback.from_exception(type(cause), cause, cause.__traceback__))
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(fleet: Path, only: list[str] | None, read_data: bool = False):
    """Parse the fleet file and check every selected specialist's data and base model, before any work;
    ``read_data``: read each source through and check what curation will check."""
    from fleet.core.settings import Settings
    from fleet.core.spec import SpecError
    from fleet.data.sources import CurationError, check_source
    from fleet.kinds import kind_of, load_fleet
    from fleet.models.base_models import TrainingError, check_base_model
    from fleet.ops.preflight import check_data

    try:
        spec = load_fleet(fleet, Settings.load().data_root_paths)
        selected = spec.select(only)
    except SpecError as exc:
        _fail(str(exc))
    problems, notes, cause = [], [], None
    for s in selected:
        where = "base_model"
        try:
            check_base_model(s.base_model)
            notes += [f"{s.name}: {n}" for n in kind_of(s).check_base(s)]
            where = "data.source"
            check_source(s.data)
            where = "data"
            notes += [f"{s.name}: {n}" for n in (check_data(s) if read_data else [])]
        except (TrainingError, CurationError) as exc:
            problems.append(f"specialists.{s.name}.{where}: {exc}")
            cause = cause or exc
    if problems:
        _fail(f"fleet file {fleet}:\n" + "\n".join(f"  - {p}" for p in problems), cause=cause)
    for note in notes:
        out.print(f"note: {escape(note)}", highlight=False)
    return spec, selected


@app.command()
def validate(fleet: Path = FleetOpt) -> None:
    """Check the fleet file, read each data source through, check the base models and servers; train nothing."""
    _settings(check=True)
    _, selected = _load(fleet, None, read_data=True)
    problems = [p for p in (_sla_check(s) for s in selected if s.sla.p95_ms is not None) if p]
    if problems:
        _fail(f"invalid fleet file {fleet}:\n" + "\n".join(f"  - {p}" for p in problems))
    out.print(f"{fleet}: {len(selected)} specialist(s) OK: {', '.join(s.name for s in selected)}")


def _sla_check(spec) -> str | None:
    """An SLA's p95 that its champion's measured single-request latency already breaks (None: fine, or no
    champion measured yet)."""
    from fleet.ops import sla
    from fleet.stages import registry

    try:
        champ = registry.champion_version(spec.name)
        record = registry.decision_record(spec.name, champ) if champ is not None else None
    except Exception as exc:  # the registry away: say so, do not refuse the file for it
        err.print(f"[yellow]note:[/] {spec.name}: sla.p95_ms not checked against a measurement ({exc})")
        return None
    score = record.contenders.get("challenger") if record is not None else None
    measured = score.cost.latency_p50_ms if score is not None else None
    return sla.unattainable(spec, measured, str(champ.version)) if champ is not None else None


@app.command()
def run(
    fleet: Path = FleetOpt,
    only: list[str] | None = typer.Option(None, "--only", help="Run only this specialist (repeatable)."),
    trigger: str = typer.Option("manual", help="Why this run happens: manual, schedule or drift."),
) -> None:
    """Curate, fine-tune, evaluate and register each specialist (skipping what is up to date)."""
    if trigger not in ("manual", "schedule", "drift"):
        _fail(f"--trigger {trigger}: must be manual, schedule or drift")
    _settings(check=True)
    _load(fleet, only, read_data=True)
    errors.quiet_prefect()
    start = time.monotonic()
    from fleet.core.results import FleetRunError
    from flows.fleet_run import fleet_flow

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
    only: list[str] | None = typer.Option(None, "--only", help="Train only this specialist (repeatable)."),
) -> None:
    """Curate and fine-tune only: no evaluation, no registration (the next `fleet run` does those).

    Safe under `accelerate launch --multi_gpu` or `torchrun` (several GPUs of one node): the main process
    curates first, every process trains on its share of each batch, and only the main process stores the model.
    """
    settings = _settings()
    _, selected = _load(fleet, only)
    import torch
    from accelerate import PartialState

    from fleet.stages import curation, training

    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, ranks of a launch talk over gloo
    store = settings.store_handle()
    for s in selected:
        with state.main_process_first():  # the others then find the same data version stored
            ds = curation.curate(s, store)
        try:
            info = training.ensure_trained(s, store, ds.version, settings.runs_dir, wait_s=settings.train_wait_s)
        except training.TrainingError as exc:
            _fail(str(exc))
        if state.is_main_process:
            how = "already stored" if info.reused else f"trained by {info.world_size} process(es)"
            out.print(f"{s.name}: data {ds.version}, model {info.training_key} {how}", highlight=False)


def _print_rows(rows) -> None:
    metrics = {r.metric for r in rows if r.metric}
    one = next(iter(metrics)) if len(metrics) == 1 else None  # kinds judged by different metrics: a column
    table = Table(title="fleet run")
    for c in (
        "specialist",
        "status",
        "version",
        "alias",
        "verdict",
        *([] if one else ["metric"]),
        *(f"{role} {one}" if one else role for role in ("challenger", "champion", "baseline")),
        "dataset_version",
    ):
        table.add_column(c)
    for r in rows:
        if r.status == "failed":
            table.add_row(r.specialist, "[red]failed[/]", *[""] * (7 if one else 8))
            continue
        scores = [
            "" if r.scores.get(role) is None else f"{r.scores[role]:.4f}"
            for role in ("challenger", "champion", "baseline")
        ]
        table.add_row(
            r.specialist,
            r.status,
            r.version or "",
            r.alias or "",
            r.verdict or "",
            *([] if one else [r.metric or ""]),
            *scores,
            r.dataset_version or "",
        )
    out.print(table)
    for r in rows:
        if r.status == "failed":
            err.print(f"[red]{r.specialist}[/]: {escape(str(r.error))}", highlight=False)
        if len(r.attempts) > 1:  # retried on workers (FLEET_TASK_RUNNER=deployments): where each attempt ran
            out.print(f"{r.specialist}: " + "; ".join(r.attempts), highlight=False)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fleet: Path = FleetOpt,
) -> None:
    """The champion of each specialist against the general baselines, read from the MLflow registry; and the
    specialist runs found stuck on workers in the last two days."""
    settings = _settings()
    from fleet.core.spec import SpecError
    from fleet.kinds import load_fleet
    from fleet.ops.leaderboard import flat, fleet_status
    from fleet.stages.registry import RegistryError, registered_names

    names = []
    with contextlib.suppress(SpecError):
        names = list(load_fleet(fleet).specialists) if fleet.exists() else []
    try:
        names += [n for n in registered_names() if n not in names]
        rows = fleet_status(names)
    except RegistryError as exc:
        _fail(str(exc))
    stuck = _stuck_runs(settings)
    if as_json:
        extras = _flywheel.status_extras(names, fleet)
        rows_out = [r.model_dump(mode="json") | extras.get(r.specialist, {}) for r in rows]
        for row in rows_out:
            row["stuck_runs"] = [f for f in stuck if f.get("specialist") == row["specialist"]]
        print(json.dumps(rows_out, indent=2))
        return
    table = Table(
        title="fleet status: champion vs strongest general baseline (gate metric, 95% CI; cost per 1,000 predictions)"
    )
    extras = _flywheel.status_extras(names, fleet)
    cells = [flat(r) | extras.get(r.specialist, {}) for r in rows]
    for c in cells[0] if cells else {"specialist": ""}:
        table.add_column(c)
    for c in cells:
        table.add_row(
            *[
                "" if v is None else (f"{v:,.6f}" if isinstance(v, float) and "cost" in k else str(v))
                for k, v in c.items()
            ]
        )
    out.print(table)
    if stuck:
        table = Table(title="stuck specialist runs, last two days (FLEET_STUCK_AFTER_S without a sign of life)")
        for col in ("specialist", "run_id", "state", "silent_s", "on", "action"):
            table.add_column(col)
        for f in stuck:
            table.add_row(
                *(str(f.get(col) or "") for col in ("specialist", "run_id", "state", "silent_s", "on", "action"))
            )
        out.print(table)


def _stuck_runs(settings) -> list[dict]:
    from fleet.core.storage import StorageError
    from fleet.ops.heartbeats import recent_stuck

    try:
        return recent_stuck(settings.store_handle())
    except StorageError as exc:
        err.print(f"[yellow]stuck runs not read: {exc}[/yellow]")
        return []


@app.command()
def promote(
    name: str = typer.Argument(..., help="The specialist."),
    version: str = typer.Argument(..., help="The version to make champion."),
) -> None:
    """Make a registered version the champion by hand (recorded in the champion history)."""
    settings = _settings()
    from fleet.core.leases import LeaseBusy
    from fleet.ops.champions import promote as do_promote
    from fleet.stages.registry import RegistryError

    try:
        do_promote(settings.store_handle(), name, version)
    except (RegistryError, LeaseBusy) as exc:
        _fail(str(exc))
    out.print(f"{name}: champion is now version {version}")


@app.command()
def rollback(name: str = typer.Argument(..., help="The specialist.")) -> None:
    """Move the champion back to the previous champion (recorded)."""
    settings = _settings()
    from fleet.core.leases import LeaseBusy
    from fleet.ops.champions import rollback as do_rollback
    from fleet.stages.registry import RegistryError

    try:
        old, new = do_rollback(settings.store_handle(), name)
    except (RegistryError, LeaseBusy) as exc:
        _fail(str(exc))
    out.print(f"{name}: champion rolled back from version {old} to version {new}")


@app.command()
def predict(
    name: str = typer.Argument(..., help="The specialist."),
    texts: list[str] = typer.Argument(..., help="Texts to answer."),
    alias: str = typer.Option("champion", help="Registry alias to use."),
    version: str | None = typer.Option(None, help="A version number instead of an alias."),
    log: bool = typer.Option(True, help="Append the predictions to the specialist's traffic log (for drift)."),
    fleet: Path = FleetOpt,
    cascade: bool = typer.Option(True, help="Escalate unsure answers to the fleet file's serving.fallback."),
) -> None:
    """Answer texts with a specialist's registered model; prints its answer (a classifier: label, score) and the
    text; an answer the cascade sent to the fleet file's serving.fallback is said so on stderr.

    The version's files are loaded by its kind, as serving loads them: no code from the registry is run."""
    settings = _settings()
    import tempfile

    from transformers.utils import logging as hf_logging

    from fleet.core.records import ModelRecord
    from fleet.kinds import kind_of
    from fleet.ops import escalation, traffic
    from fleet.stages import registry

    hf_logging.disable_progress_bar()  # keep the output a clean table of predictions
    uri = f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            number = version or _alias_version(name, alias)
            folder = registry.download_model_dir(name, number, tmp)
            kind = kind_of(ModelRecord.read(folder).task)
            outputs = kind.load(folder, name).predict(list(texts))
            tags = registry.client().get_model_version(name, number).tags or {}
        except Exception as exc:  # no such version, an unreachable registry, a broken model folder
            first = (getattr(exc, "message", None) or str(exc)).splitlines()[0]
            _fail(f"{uri}: cannot load ({first}); train it with `fleet run --only {name}`")
    spec = _fleet_specs(fleet, required=False).get(name) if cascade else None
    routed = escalation.route(spec, kind, list(texts), outputs, escalation.threshold_of(tags))
    frame = kind.to_frame(routed.outputs)
    for text, answer, who, problem in zip(texts, frame.to_dict("records"), routed.answered_by, routed.errors):
        if problem:  # on stderr: stdout stays the answers, for pipes
            err.print(f"fallback failed ({escape(problem)}): the specialist's answer to {text[:40]!r}", highlight=False)
        elif who == escalation.FALLBACK:
            err.print(f"answered by the fallback (the specialist was unsure): {text[:40]!r}", highlight=False)
        if "output" in frame:  # a generative specialist: its answer as it wrote it
            print(answer["output"])
        else:  # plain TSV, for pipes: the answer's fields, then the text
            print("\t".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in answer.values()) + f"\t{text}")
    if log:
        extra = escalation.traffic_fields(routed, kind, list(texts))
        rows = [r | {"client": "cli:predict"} | e for r, e in zip(kind.traffic_rows(list(texts), outputs), extra)]
        traffic.log_predictions(settings.store_handle(), name, rows, number, key=settings.traffic_key)


def _alias_version(name: str, alias: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def _task_of(name: str, fleet: Path) -> str:
    """The specialist's task: from the fleet file when it names it, else from its registered champion."""
    from fleet.core.spec import SpecError
    from fleet.kinds import DEFAULT_TASK, load_fleet
    from fleet.stages.registry import champion_version

    try:
        spec = load_fleet(fleet) if fleet.exists() else None
    except SpecError:
        spec = None
    if spec is not None and name in spec.specialists:
        return spec.specialists[name].task
    champion = champion_version(name)
    if champion is None:
        _fail(f"{name}: not in {fleet} and not in the registry; name the fleet file with --fleet")
    return (champion.tags or {}).get("task", DEFAULT_TASK)


@app.command()
def feedback(
    name: str = typer.Argument(..., help="The specialist."),
    file: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet with the input and the right answer."),
    text_column: str = typer.Option("text", help="The input's column."),
    answer_column: str | None = typer.Option(
        None,
        "--answer-column",
        "--label-column",
        help="The right answer's column (default: label for a classifier, response for a generative specialist).",
    ),
    fleet: Path = FleetOpt,
) -> None:
    """Store corrected answers for a specialist (redacted, date-partitioned); retraining merges them."""
    settings = _settings()
    from fleet.core.spec import DataSpec
    from fleet.data.sources import CurationError, load_raw
    from fleet.kinds import kind_of
    from fleet.ops import traffic

    target = kind_of(_task_of(name, fleet)).target
    try:
        raw = load_raw(DataSpec(source=str(file.resolve())), {"text": text_column, target: answer_column or target})
    except CurationError as exc:
        _fail(str(exc))
    rows = [{"text": str(t), target: str(a)} for t, a in zip(raw["text"], raw[target]) if str(t).strip()]
    key = traffic.append(settings.store_handle(), "feedback", name, rows, key=settings.traffic_key)
    out.print(f"{name}: {len(rows)} feedback row(s) stored at {key}")


@app.command()
def simulate(
    name: str = typer.Argument(..., help="The specialist whose traffic is simulated."),
    shift: str = typer.Option("none", help="none (held-out data), prior (label mix changed), domain."),
    from_: str | None = typer.Option(None, "--from", help="domain: the specialist whose data to send."),
    rows: int = typer.Option(200, help="Rows in the window."),
    seed: int = typer.Option(0),
    fleet: Path = FleetOpt,
) -> None:
    """Write a simulated traffic window, scored by the champion, to the traffic log."""
    settings = _settings()
    spec, _ = _load(fleet, [name])
    from fleet.ops.monitoring import MonitorError
    from fleet.ops.monitoring import simulate as do_simulate

    other = None
    if shift == "domain":
        others = [s for n, s in spec.specialists.items() if n != name and (from_ is None or n == from_)]
        if not others:
            _fail(f"--shift domain: no other specialist{' named ' + from_ if from_ else ''} in {fleet}")
        other = others[0]
    try:
        key = do_simulate(
            spec.specialists[name], settings.store_handle(), shift, rows, seed, other, key=settings.traffic_key
        )
    except (MonitorError, ValueError) as exc:
        _fail(str(exc))
    out.print(f"{name}: {rows} simulated rows (shift {shift}) written to {key}")


@app.command()
def monitor(
    fleet: Path = FleetOpt, only: list[str] | None = typer.Option(None, "--only", help="Monitor only this specialist.")
) -> None:
    """Check each specialist's latest traffic window for drift and against its SLA; emit a Prefect event when it
    drifted (fleet.specialist.drift-detected) or broke its SLA (fleet.sla.violated)."""
    _settings()
    _load(fleet, only)
    from flows.monitor import monitor_fleet_flow

    for r in monitor_fleet_flow(fleet_file=str(fleet.resolve()), only=only or None):
        out.print(
            f"{r['specialist']}: {r['status']}"
            + (f" (fired: {', '.join(r['fired'])}; event {r['event_id']})" if r.get("event_id") else "")
            + f"  report {r['report_id']}"
            + (
                f"\n  SLA breached: {'; '.join(r['sla_breaches'])} (event {r['sla_event_id']})"
                if r.get("sla_breaches")
                else ""
            )
        )


@app.command()
def tco(
    month: str | None = typer.Option(None, "--month", help="The month to bill, YYYY-MM (default: this one, UTC)."),
    requests: int | None = typer.Option(
        None, "--requests", help="Requests a month to project at (default: the month's own), spread as observed."
    ),
    months: int = typer.Option(12, "--months", min=1, max=120, help="Months to project."),
    fleet: Path = FleetOpt,
) -> None:
    """Each specialist's cost for a month (training, inference, fallback, teacher, reviews) against sending all
    of its traffic to its fallback, and the months ahead at a stated volume with the fallback's price falling
    (tco.api_price_change_per_year): the break-even month. Also a Prefect artifact, MLflow metrics (experiment
    fleet-tco) and a PNG of cumulative cost (stored as tco/MONTH.png)."""
    from datetime import UTC, datetime

    settings = _settings()
    _load(fleet, None)
    from fleet.ops.tco import month_bounds

    month = month or datetime.now(UTC).strftime("%Y-%m")
    try:
        month_bounds(month)
    except ValueError as exc:
        _fail(str(exc))
    errors.quiet_prefect()
    from flows.tco import tco_flow

    result = tco_flow(month=month, fleet_file=str(fleet.resolve()), requests_per_month=requests, months=months)
    print(result["markdown"])  # markdown tables, as they are (no console markup)
    if result.get("projections"):
        out.print(f"cumulative cost plot: {settings.store_handle().url}/tco/{month}.png", highlight=False)


@app.command()
def score(
    name: str = typer.Argument(..., help="The specialist."),
    source: str = typer.Argument(..., help="A file, s3://BUCKET/KEY, or s3://BUCKET/PREFIX/ of texts."),
    dest: str = typer.Argument(..., help="Where the answers go (JSONL): a path or s3://BUCKET/KEY."),
    text_column: str = typer.Option("text", help="The texts' column."),
) -> None:
    """Batch scoring: the champion answers every text; every answer is also logged as traffic (for drift)."""
    _settings()
    from flows.score import score_flow

    state = score_flow(name=name, source=source, dest=dest, text_column=text_column, return_state=True)
    if not state.is_completed():
        _fail(f"batch scoring failed: {state.result(raise_on_failure=False)}", code=1)
    result = state.result()
    out.print(f"{name}: {result['rows']} answer(s) written to {result['dest']}", highlight=False)


@app.command()
def serve(
    fleet: Path = FleetOpt,
    train_cron: str | None = typer.Option("0 3 * * *", help="Cron of the fleet training deployment."),
    limit: int = typer.Option(4, help="Flow runs this process runs at once."),
) -> None:
    """Serve every deployment (schedules, the drift trigger) from this process; needs a Prefect server."""
    _settings()
    _load(fleet, None)
    if not os.environ.get("PREFECT_API_URL"):
        err.print(
            "[yellow]warning:[/] PREFECT_API_URL is not set: schedules and event triggers need a Prefect "
            "server (`prefect server start`); the temporary local server runs neither."
        )
    from prefect import serve as prefect_serve

    from flows.deployments import runner_deployments

    prefect_serve(*runner_deployments(str(fleet.resolve()), train_cron or None), limit=limit)


@app.command()
def export(
    name: str = typer.Argument(..., help="The specialist."),
    merged: Path | None = typer.Option(
        None, "--merged", help="Folder for the merged model: new, empty, or an earlier export (then replaced)."
    ),
    gguf: Path | None = typer.Option(
        None,
        "--gguf",
        help="Folder for llama.cpp files (generative specialists): base + LoRA adapter as GGUF and a "
        "llama-server command line; new, empty, or an earlier export (then replaced).",
    ),
    quant: str = typer.Option("f16", help="--gguf: the base's weights: f16, q8_0 or q4_k_m."),
    version: str | None = typer.Option(None, help="A version number (default: the champion)."),
) -> None:
    """Write a version as files other tools run (a whole merged model, or llama.cpp's GGUF files), checked
    against the fleet's own answers."""
    settings = _settings()
    import tempfile

    from fleet.data import versions
    from fleet.ops import export as exporting
    from fleet.stages import registry
    from fleet.stages.registry import RegistryError

    if (merged is None) == (gguf is None):
        _fail("fleet export: give one of --merged DIR or --gguf DIR")
    if quant not in ("f16", "q8_0", "q4_k_m"):
        _fail(f"--quant {quant}: choose f16, q8_0 or q4_k_m")
    dest = merged or gguf
    assert dest is not None
    try:
        exporting.check_destination(dest)  # before any download: a folder of other files is refused
    except exporting.ExportError as exc:
        _fail(str(exc))
    try:
        v = registry.client().get_model_version(name, version) if version else registry.champion_version(name)
    except Exception as exc:
        _fail(f"{name}: no version {version}: {exc}")
    if v is None:
        _fail(f"{name}: no champion to export; train it with `fleet run --only {name}`")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = registry.download_model_dir(name, str(v.version), tmp)
        except RegistryError as exc:
            _fail(str(exc))
        store, data = settings.store_handle(), (v.tags or {}).get("dataset_version", "")
        samples = (
            versions.load_split(store, name, data, "test")["text"].tolist()[:64]
            if data and versions.exists(store, name, data)
            else ["A short example text.", "Another, somewhat longer example text for the check."]
        )
        try:
            if gguf is not None:
                result = exporting.gguf(folder, gguf, samples[:16], name, quant)
            else:
                result = exporting.merged(folder, dest, samples)
        except exporting.ExportError as exc:
            _fail(str(exc))
    how = "for llama.cpp" if gguf is not None else "merged"
    out.print(
        f"{name} v{v.version} exported {how} to {result.folder} ({result.size_bytes / 1e6:.1f} MB); parity: "
        f"largest difference {result.max_difference:.2g} in {result.parity}",
        highlight=False,
    )
    if gguf is not None:
        out.print(f"serve it: LLAMA_API_KEY=... {gguf / 'llama-server.sh'}", highlight=False)


@app.command("serve-models")
def serve_models(
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port."),
    fleet: Path = FleetOpt,
    only: list[str] | None = typer.Option(None, "--only", help="Serve only this specialist (repeatable)."),
    int8: str = typer.Option("auto", help="auto: int8 encoders for versions whose parity check passed; off."),
    reload_interval: float = typer.Option(5.0, help="Seconds between checks for a new champion."),
    max_wait_ms: float = typer.Option(10.0, help="How long a request waits for others to share its batch."),
) -> None:
    """Serve the fleet's champions over HTTP from one process: each base model loaded once, adapters on top,
    requests for different specialists batched together; a new champion is picked up without a restart.

    Only the specialists of the fleet file (or those named with --only) are served, never every model the
    registry holds; one whose champion alias is removed answers 503 until a champion is set again."""
    settings = _settings()
    if int8 not in ("auto", "off"):
        _fail(f"--int8 {int8}: must be auto or off")
    from fleet.core.sections import is_loopback

    tokens = settings.serve_clients()
    if tokens is None and not is_loopback(host):
        _fail(f"--host {host}: serving beyond this machine needs a token; set FLEET_SERVE_TOKEN or FLEET_SERVE_TOKENS")
    specs = _fleet_specs(fleet, required=not only)
    names = only or list(specs)
    if only and not specs:
        err.print(f"[yellow]note:[/] {fleet} not read: no cascade to a fallback model (serving.fallback)")
    _forget_unneeded_secrets()
    import uvicorn

    from fleet.ops.serving.app import ServeLimits, create_app
    from fleet.ops.serving.hub import Hub

    hub = Hub(settings.home / "serving", names, int8)
    try:
        changed = hub.refresh()
    except Exception as exc:  # registry unreachable, a base missing: say which, before binding the port
        _fail(f"cannot load the champions: {exc}")
    if not changed:
        _fail("no champion to serve: train one with `fleet run`" + (f" (asked for: {', '.join(only)})" if only else ""))
    limits = ServeLimits.of(settings)
    auth = f"bearer token required ({len(tokens)} client(s))" if tokens else "no token (loopback only)"
    err.print("serving " + "; ".join(changed) + f" on http://{host}:{port} ({auth}; OpenAPI: /docs)", highlight=False)
    uvicorn.run(
        create_app(
            hub, settings.store_handle(), reload_interval, max_wait_ms, limits, tokens, settings.traffic_key, specs
        ),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=10,  # SIGTERM: in-flight requests get 10 s, then the server stops
    )


def _fleet_specs(fleet: Path, required: bool = True) -> dict:
    """The specialists a fleet file names, with their settings (parsed and validated; their data and bases are
    not checked: the server needs neither). Not ``required`` (--only names them): {} when it cannot be read."""
    from fleet.core.settings import Settings
    from fleet.core.spec import SpecError
    from fleet.kinds import load_fleet

    try:
        return dict(load_fleet(fleet, Settings.load().data_root_paths).specialists)
    except SpecError as exc:
        if required:
            _fail(f"{exc} (the server serves the specialists of its fleet file; or name them with --only)")
    return {}


def _forget_unneeded_secrets() -> None:
    """The model server talks to MLflow and the store, never to Prefect, and its tokens are held in memory:
    none of those secrets stays in the environment that its threads and any child process inherit."""
    for var in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "FLEET_SERVE_TOKEN", "FLEET_SERVE_TOKENS"):
        os.environ.pop(var, None)


@app.command()
def deploy(
    pool: str = typer.Option(
        ..., help="The work pool (create it with `prefect work-pool create POOL --type process`)."
    ),
    fleet: Path = FleetOpt,
    train_cron: str | None = typer.Option("0 3 * * *", help="Cron of the fleet training deployment."),
    only: list[str] = typer.Option(
        [], "--deployment", "-d", help="Register only this deployment (repeat; default: all), e.g. specialist."
    ),
) -> None:
    """Register every deployment with a work pool, for `prefect worker start --pool POOL` on any machine that
    reaches the servers (the fleet file travels through the object store)."""
    settings = _settings()
    _load(fleet, None)
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: deployments for workers live on a Prefect server")
    from fleet.core.spec import SpecError
    from fleet.core.storage import StorageError
    from flows.deployments import deploy_to_pool

    try:
        ids = deploy_to_pool(str(fleet.resolve()), pool, settings.store_handle(), train_cron or None, only or None)
    except (SpecError, StorageError) as exc:
        _fail(str(exc))
    out.print(f"{len(ids)} deployment(s) registered with work pool {pool} (the fleet file shipped through the store)")


@app.command("settings")
def show_settings(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Print the effective settings (environment and $FLEET_ENV_FILE), secrets masked."""
    from fleet.core.settings import Settings, SettingsError

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
    from fleet.core.settings import Settings, SettingsError

    try:
        return Settings.load().home
    except SettingsError:
        return Settings().home


@app.command()
def up(
    pg_bin: str | None = typer.Option(
        None, help="PostgreSQL's bin folder (default: $FLEET_PG_BIN, /usr/lib/postgresql/*/bin, PATH)."
    ),
) -> None:
    """Start a local production-like stack: PostgreSQL, Prefect server, MLflow server, S3 (moto)."""
    from cli import stack

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
    out.print(
        f"Point fleet commands at it:\n  export FLEET_ENV_FILE={stack.env_file(home)}\n"
        f"Prefect UI: {st.env['PREFECT_API_URL'].removesuffix('/api')}   MLflow UI: {st.env['MLFLOW_TRACKING_URI']}\n"
        "Stop it with `fleet down`.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def down() -> None:
    """Stop the processes `fleet up` started (and only those)."""
    from cli import stack

    stopped = stack.down(_stack_home(), progress=lambda m: err.print(m, highlight=False))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "no stack is up")


def main() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # an error that no command caught: one line unless --debug
        if errors.debugging():
            raise
        known = isinstance(exc, errors.expected())
        hint = "" if known else f" ({type(exc).__name__}; run with `fleet --debug ...` for the traceback)"
        err.print(f"[bold red]error:[/] {escape(str(exc))}{hint}", highlight=False, soft_wrap=True)
        sys.exit(2 if known else 1)


if __name__ == "__main__":
    main()


from cli import flywheel as _flywheel  # noqa: E402  (registers ingest, label, review, audit on the app)
