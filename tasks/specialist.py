"""Tasks of the specialist path: curate, fine-tune, evaluate, register."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from fleet import curation, drift, evaluation, registry, traffic, training
from fleet.settings import Settings
from fleet.spec import SpecialistSpec, load_fleet
from fleet.storage import get_json, put_json

# Stages decide for themselves whether work is needed (content hashes, training keys), so
# Prefect's input hashing is off: it cannot hash models, and it would not survive a new process.
_MLFLOW = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2), cache_policy=NONE)


@task(name="load-spec", cache_policy=NONE)
def load_spec(fleet_file: str, name: str) -> SpecialistSpec:
    return load_fleet(fleet_file).select([name])[0]


@task(name="curate", cache_policy=NONE)
def curate(spec: SpecialistSpec, settings: Settings, with_feedback: bool = False) -> curation.DatasetVersion:
    store = settings.store_handle()
    extra = traffic.read_all(store, "feedback", spec.name) if with_feedback else None
    ds = curation.curate(spec, store, extra)
    get_run_logger().info(
        "dataset %s %s: %s; quarantined %s; changed %s", ds.version, "written" if ds.created else "already stored",
        ds.counts, ds.quarantined or "none", ds.changed or "none",
    )
    create_markdown_artifact(
        key=f"{spec.name}-curation", markdown=curation.load_card(store, spec.name, ds.version),
        description=f"Curation report (data card) of {spec.name} dataset {ds.version}",
    )
    return ds


@task(name="find-registered", **_MLFLOW)
def find_registered(name: str, train_key: str) -> dict | None:
    v = registry.find_version(name, train_key)
    return None if v is None else {"version": str(v.version), "tags": dict(v.tags or {})}


@task(name="fine-tune", cache_policy=NONE)
def fine_tune(spec: SpecialistSpec, dataset: curation.DatasetVersion, settings: Settings) -> dict:
    return training.ensure_trained(spec, settings.store_handle(), dataset.version, settings.runs_dir)


@task(name="evaluate", cache_policy=NONE)
def evaluate(spec: SpecialistSpec, dataset: curation.DatasetVersion, model: dict, settings: Settings) -> dict:
    store = settings.store_handle()
    test = curation.load_split(store, spec.name, dataset.version, "test")
    champ = registry.champion_version(spec.name)
    champion = None
    if champ is not None:
        dest = settings.runs_dir / spec.name / "champions" / str(champ.version)
        champion = (str(champ.version), registry.download_model_dir(spec.name, str(champ.version), dest))
    workdir = settings.runs_dir / spec.name / model["training_key"] / "evaluation"
    report = evaluation.evaluate_specialist(
        spec, test, dataset.version, model["model_dir"], model["max_length"], champion, workdir
    )
    create_markdown_artifact(
        key=f"{spec.name}-evaluation", markdown=evaluation.report_markdown(report),
        description=f"Challenger vs champion vs general baseline for {spec.name}",
    )
    return report


@task(name="reference-profile", cache_policy=NONE)
def reference_profile(spec: SpecialistSpec, dataset: curation.DatasetVersion, model: dict, settings: Settings) -> bytes:
    return drift.profile(spec, settings.store_handle(), dataset.version, model["model_dir"])


@task(name="register", cache_policy=NONE)
def register(
    spec: SpecialistSpec, dataset: curation.DatasetVersion, model: dict, report: dict, trigger: str, settings: Settings,
    reference: bytes | None = None, drift_report: str | None = None,
) -> dict:
    store = settings.store_handle()
    splits = {s: curation.load_split(store, spec.name, dataset.version, s) for s in curation.SPLITS}
    card = curation.card_files(store, spec.name, dataset.version)
    reg = registry.register(
        spec, dataset, splits, model["model_dir"], model, report, trigger, model["training_key"], settings.artifacts,
        dataset_files=card, reference=reference, lineage={"drift_report": drift_report} if drift_report else None,
    )
    get_run_logger().info("registered %s version %s as %s (%s)", reg.name, reg.version, reg.alias, reg.verdict)
    return reg.to_dict()


@task(name="fleet-summary", cache_policy=NONE)
def publish_summary(results: list[dict]) -> None:
    create_table_artifact(key="fleet-summary", table=results, description="Outcome per specialist of this fleet run")
    names = [r["specialist"] for r in results]
    create_table_artifact(
        key="fleet-leaderboard", table=registry.fleet_status(names),
        description="Champion vs general baseline: macro-F1 with 95% intervals, cost per 1,000 predictions, "
        "and macro-F1 points gained per unit of cost",
    )


def result_key(flow_run_id: str) -> str:
    return f"results/specialist/{flow_run_id}.json"


@task(name="store-result", **_MLFLOW)
def store_result(settings: Settings, result: dict) -> None:
    """Keep the specialist flow's result in the object store, where a parent on another machine can read it."""
    from prefect.runtime import flow_run

    if flow_run.id:
        put_json(settings.store_handle(), result_key(flow_run.id), result)


def stored_result(settings: Settings, flow_run_id: str) -> dict:
    return get_json(settings.store_handle(), result_key(flow_run_id))


@task(name="load-fleet", cache_policy=NONE)
def load_fleet_spec(fleet_file: str):
    return load_fleet(fleet_file)


def summarize(states: dict) -> list[dict]:
    """One row per specialist from the final states of their flow runs (failures carry their message)."""
    rows = []
    for name, state in states.items():
        if not state.is_completed():
            err = state.result(raise_on_failure=False)
            rows.append({"specialist": name, "status": "failed", "error": str(err) if err is not None else state.message})
            continue
        r = state.result()
        row = {k: r.get(k) for k in ("specialist", "status", "version", "alias", "verdict", "dataset_version", "ran_on")}
        if "report" in r:
            c = r["report"]["contenders"]
            for role in ("challenger", "champion", "baseline"):
                row[f"{role}_macro_f1"] = round(c[role]["macro_f1"], 4) if c.get(role) else None
        else:
            tags = r.get("tags", {})
            row["alias"] = "unchanged"
            row["verdict"] = tags.get("gate.verdict")
            for role in ("challenger", "champion", "baseline"):
                v = tags.get(f"{role}.macro_f1")
                row[f"{role}_macro_f1"] = None if v in (None, "none") else float(v)
        rows.append(row)
    return rows
