"""The data flywheel's flow: teacher-label the pool, then rank the review queue (scheduled, and run on
`fleet.pool.grew` events that the monitor emits when enough rows await a label)."""

from __future__ import annotations

from prefect import flow

from fleet.core.settings import Settings
from flows.specialist import DEFAULT_FLEET_FILE
from tasks import labeling as lab
from tasks import specialist as t


@flow(name="label", flow_run_name="label-{name}")
def label_flow(name: str, fleet_file: str = DEFAULT_FLEET_FILE) -> dict:
    """One specialist: the fallback's answers to its escalated requests and teacher labels for its unlabelled
    pool, then its review queue (counts returned)."""
    settings = Settings.load().apply()
    spec = t.load_spec(fleet_file, name, settings)
    learned = lab.fallback_labels(spec, settings)
    run = lab.teacher_label(spec, settings)
    counts = lab.review_queue(spec, settings)
    return {"specialist": name, "fallback_labels": learned, "teacher": None if run is None else run.as_dict(), **counts}
