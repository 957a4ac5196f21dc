"""Tasks of the specialist path: thin wrappers over ``fleet/`` with retries, logging and artifacts."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from fleet import kinds
from fleet.core import shipping
from fleet.core.results import (
    DatasetVersion,
    EvaluationReport,
    GeneralScores,
    Lineage,
    Registration,
    SpecialistResult,
    TrainedModel,
)
from fleet.core.settings import Settings
from fleet.core.spec import FleetSpec, SpecialistSpec
from fleet.core.storage import get_json, put_json
from fleet.data import versions
from fleet.kinds import load_fleet
from fleet.labeling import flywheel
from fleet.models import base_models
from fleet.ops import leaderboard, traffic
from fleet.stages import cascade, curation, evaluation, profiles, registry, summary, training

# Stages decide for themselves whether work is needed (content hashes, training keys), so
# Prefect's input hashing is off: it cannot hash models, and it would not survive a new process.
_MLFLOW: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "cache_policy": NONE,
}


def _pictures(figures: dict[str, bytes]) -> str:
    return "".join(
        f"\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})\n" for name, png in figures.items()
    )


def read_fleet(fleet_file: str, settings: Settings) -> FleetSpec:
    """The fleet file at a path, or one shipped through the store (``store:fleets/DIGEST``, fetched into the
    home: a worker elsewhere needs nothing but the servers); its relative data files came along with it."""
    roots = settings.data_root_paths
    if shipping.is_shipped(fleet_file):
        folder = settings.home / "fleets"
        path = shipping.fetch(fleet_file, settings.store_handle(), folder)
        return load_fleet(path, None if roots is None else [*roots, folder.resolve()])
    return load_fleet(fleet_file, roots)


@task(name="load-spec", cache_policy=NONE)
def load_spec(fleet_file: str, name: str, settings: Settings) -> SpecialistSpec:
    return read_fleet(fleet_file, settings).select([name])[0]


@task(name="load-fleet", cache_policy=NONE)
def load_fleet_spec(fleet_file: str, settings: Settings) -> FleetSpec:
    return read_fleet(fleet_file, settings)


def work_queue(spec: SpecialistSpec, settings: Settings) -> str | None:
    """The work queue of a specialist's deployment runs: the GPU queue for `compute: gpu`, or for `compute:
    auto` with a base heavier than ``cpu_max_base_gb`` (its weight files, when they can be told without a
    download); None: the pool's default queue."""
    if spec.compute == "auto":
        try:
            size = base_models.weights_gb(spec.base_model)
        except (OSError, base_models.TrainingError):
            size = None
        needs_gpu = size is not None and size > settings.cpu_max_base_gb
        if needs_gpu:
            get_run_logger().info(
                "%s: its base's weights are %.1f GB (more than FLEET_CPU_MAX_BASE_GB=%.1f): the GPU queue",
                spec.name,
                size,
                settings.cpu_max_base_gb,
            )
    else:
        needs_gpu = spec.compute == "gpu"
    return settings.gpu_work_queue if needs_gpu else None


@task(name="ship-fleet", cache_policy=NONE)
def ship_fleet(fleet_file: str, settings: Settings) -> str:
    """The fleet file and its relative data files stored once in the object store; the reference workers
    fetch them by (already a reference: as is)."""
    if shipping.is_shipped(fleet_file):
        return fleet_file
    ref = shipping.ship(fleet_file, settings.store_handle())
    get_run_logger().info("fleet file %s shipped to the store as %s", fleet_file, ref)
    return ref


@task(name="curate", cache_policy=NONE)
def curate(spec: SpecialistSpec, settings: Settings, with_feedback: bool = False) -> DatasetVersion:
    store = settings.store_handle()
    extra = traffic.read_all(store, "feedback", spec.name) if with_feedback else None
    try:
        learned = flywheel.learn_from_fallback(spec, store)  # escalations teach: the fallback's answers
    except flywheel.LabelingError as exc:
        learned = 0
        get_run_logger().info("%s: escalations not read (%s)", spec.name, exc)
    if learned:
        get_run_logger().info("%s: %d escalated request(s) labelled by the fallback's answers", spec.name, learned)
    reviewed = flywheel.training_rows(spec, store)  # the flywheel's labels, into the training split only
    ds = curation.curate(spec, store, extra, reviewed)
    get_run_logger().info(
        "dataset %s %s: %s; quarantined %s; changed %s; training labels from %s",
        ds.version,
        "written" if ds.created else "already stored",
        ds.counts,
        ds.quarantined or "none",
        ds.changed or "none",
        ds.label_sources,
    )
    create_markdown_artifact(
        key=f"{spec.name}-curation",
        markdown=versions.load_card(store, spec.name, ds.version),
        description=f"Curation report (data card) of {spec.name} dataset {ds.version}",
    )
    return ds


@task(name="find-registered", **_MLFLOW)
def find_registered(spec: SpecialistSpec, dataset: DatasetVersion, settings: Settings) -> SpecialistResult | None:
    key = training.training_key(spec, dataset.version)
    return summary.up_to_date(spec.name, dataset, key, settings.store_handle())


@task(name="fine-tune", cache_policy=NONE)
def fine_tune(spec: SpecialistSpec, dataset: DatasetVersion, settings: Settings) -> TrainedModel:
    with fine_tune_slot(settings):
        model = training.ensure_trained(
            spec,
            settings.store_handle(),
            dataset.version,
            settings.runs_dir,
            wait_s=settings.train_wait_s,
            lease_ttl_s=settings.lease_ttl_s,
        )
    if model.resumed_from:  # a run before this one (here, or on a worker that is gone) stopped there
        step = model.resumed_from.rsplit("checkpoint-", 1)[-1]
        get_run_logger().info("%s: fine-tune resumed from the checkpoint of step %s", spec.name, step)
    return model


SLOT_TAKEN, SLOT_RELEASED = "took a slot of", "released a slot of"


def fine_tune_limit(settings: Settings) -> str:
    return f"fine-tune-{settings.worker_name or socket.gethostname()}"


@contextlib.contextmanager
def fine_tune_slot(settings: Settings) -> Iterator[None]:
    """On a worker (a run of a deployment): one of the worker's fine-tune slots, a Prefect global concurrency
    limit (``fine-tune-WORKER``, ``fine_tune_slots``), made when missing; so at most that many fine-tunes of
    this worker hold its GPU while other runs' curation, evaluation and I/O go on. In-process runners: none
    (the process's compute slots, ``fleet.core.compute``, bound them)."""
    from prefect.runtime import deployment

    if deployment.id is None:
        yield
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = fine_tune_limit(settings)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run of this worker made it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=settings.fine_tune_slots)
                )
    logger = get_run_logger()
    logger.info("waiting for a slot of %s", name)
    with concurrency(name, occupy=1, strict=True):
        logger.info("%s %s", SLOT_TAKEN, name)  # these two lines time the hold (benchmarks/distributed.py)
        try:
            yield
        finally:
            logger.info("%s %s", SLOT_RELEASED, name)


@task(name="evaluate-general", cache_policy=NONE)
def evaluate_general(spec: SpecialistSpec, dataset: DatasetVersion, settings: Settings) -> GeneralScores:
    """The general baselines and the champion on the test split (while the new model trains)."""
    store = settings.store_handle()
    test = versions.load_split(store, spec.name, dataset.version, "test")
    train = versions.load_split(store, spec.name, dataset.version, "train")
    champion = registry.champion_model(spec.name, settings.runs_dir / spec.name / "champions")
    scores = evaluation.general(spec, test, champion, train, store)
    log = get_run_logger()
    for s in [*scores.baselines, *([scores.champion] if scores.champion else [])]:
        if s.reused:
            log.info("%s (%s): scored before on this test split: score reused, not run again", s.model, s.role)
        else:
            log.info("%s (%s): scored on the test split and stored", s.model, s.role)
    return scores


@task(name="evaluate", cache_policy=NONE)
def evaluate(
    spec: SpecialistSpec, dataset: DatasetVersion, model: TrainedModel, others: GeneralScores, settings: Settings
) -> EvaluationReport:
    store = settings.store_handle()
    test = versions.load_split(store, spec.name, dataset.version, "test")
    report = evaluation.judge(spec, test, model, others, store)
    if spec.serving.fallback is not None:
        validation, train = (versions.load_split(store, spec.name, dataset.version, s) for s in ("validation", "train"))
        cas = cascade.calibrate(spec, report, model, validation, test, train, store)
        report = report.model_copy(update={"cascade": cas})
        if cas is not None:
            get_run_logger().info(
                "%s: cascade to %s keeps %.1f%% of test requests on the specialist (%s %.4f vs the fallback's %.4f; "
                "%.4f vs %.4f per 1,000)",
                spec.name,
                cas.fallback,
                100 * cas.kept_share.value,
                cas.metric,
                cas.cascade_quality.value,
                cas.fallback_quality.value,
                cas.cost_per_1k["cascade"].value,
                cas.cost_per_1k["fallback"].value,
            )
    create_markdown_artifact(
        key=f"{spec.name}-evaluation",
        markdown=evaluation.report_markdown(report) + _pictures(kinds.kind_of(spec).figures(report)),
        description=f"Challenger vs champion vs general baselines for {spec.name}",
    )
    return report


@task(name="reference-profile", cache_policy=NONE)
def reference_profile(spec: SpecialistSpec, model: TrainedModel, report: EvaluationReport, settings: Settings) -> bytes:
    return profiles.build(spec, settings.store_handle(), model, report)


@task(name="register", **_MLFLOW)
def register(
    spec: SpecialistSpec,
    dataset: DatasetVersion,
    model: TrainedModel,
    report: EvaluationReport,
    lineage: Lineage,
    settings: Settings,
    reference: bytes,
) -> Registration:
    store = settings.store_handle()
    files = {"dataset": versions.card_files(store, spec.name, dataset.version), "drift": {"reference.npz": reference}}
    tags = {"drift_report": lineage.drift_report} if lineage.drift_report else {}
    test = versions.load_split(store, spec.name, dataset.version, "test")
    parity = kinds.kind_of(spec).int8_check(spec, model, report, test["text"].tolist())
    if parity is not None:  # the int8 serving path, used only when it matches the float32 model
        tags |= {
            "int8": "passed" if parity.passed else "failed",
            "int8.agreement": f"{parity.agreement:.4f}",
            "int8.speedup": str(parity.speedup),
        }
        files["int8"] = {"parity.json": parity.model_dump_json(indent=2).encode()}
    how = registry.Registering(trigger=lineage.trigger, artifact_root=settings.artifacts, files=files, lineage=tags)
    reg = registry.register_once(spec, dataset, model, report, how, store)
    get_run_logger().info(
        "registered %s version %s as %s (%s)%s",
        reg.name,
        reg.version,
        reg.alias,
        reg.verdict,
        "" if parity is None else f"; int8 {tags['int8']}, {parity.speedup}x",
    )
    return reg


@task(name="fleet-summary", cache_policy=NONE)
def publish_summary(results: list[SpecialistResult]) -> None:
    create_table_artifact(
        key="fleet-summary",
        table=[r.model_dump(mode="json") for r in results],
        description="Outcome per specialist of this fleet run",
    )
    try:
        rows = leaderboard.fleet_status([r.specialist for r in results])
    except registry.RegistryError as exc:  # MLflow away: the run's own outcome (above) still stands
        get_run_logger().warning("leaderboard not published: %s", exc)
        return
    create_table_artifact(
        key="fleet-leaderboard",
        table=[leaderboard.flat(r) for r in rows],
        description="Champion vs strongest general baseline: the gate metric with 95% intervals, "
        "cost per 1,000 predictions, and points gained per unit of cost",
    )


def result_key(flow_run_id: str) -> str:
    return f"results/specialist/{flow_run_id}.json"


@task(name="store-result", **_MLFLOW)
def store_result(settings: Settings, result: SpecialistResult, run_id: str | None = None) -> None:
    """Keep the result of the specialist flow run ``run_id`` (default: this one) in the object store, where a
    parent on another machine can read it."""
    from prefect.runtime import flow_run

    run_id = run_id or flow_run.id
    if run_id:
        put_json(settings.store_handle(), result_key(run_id), result.model_dump(mode="json"))


def stored_result(settings: Settings, flow_run_id: str) -> SpecialistResult:
    return SpecialistResult.model_validate(get_json(settings.store_handle(), result_key(flow_run_id)))


def summarize(states: dict) -> list[SpecialistResult]:
    """One row per specialist from the final states of their flow runs (failures carry their message)."""
    rows = []
    for name, state in states.items():
        if state.is_completed():
            rows.append(state.result())
        else:
            err = state.result(raise_on_failure=False)
            rows.append(
                SpecialistResult(specialist=name, status="failed", error=str(err) if err is not None else state.message)
            )
    return rows
