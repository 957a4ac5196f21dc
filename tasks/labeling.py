"""Tasks of the data flywheel: teacher labels, the review queue, the "pool grew" event."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from fleet.core.settings import Settings
from fleet.core.spec import SpecialistSpec
from fleet.labeling import flywheel, teacher

POOL_EVENT = "fleet.pool.grew"


@task(name="fallback-labels", cache_policy=NONE)
def fallback_labels(spec: SpecialistSpec, settings: Settings) -> int:
    """The fallback's answers to escalated requests, as labels of their pooled rows (before the teacher is
    asked, so it is not asked about them)."""
    learned = flywheel.learn_from_fallback(spec, settings.store_handle())
    get_run_logger().info("%s: %d escalated request(s) labelled by the fallback's answers", spec.name, learned)
    return learned


@task(name="teacher-label", cache_policy=NONE)
def teacher_label(spec: SpecialistSpec, settings: Settings) -> teacher.TeacherRun | None:
    """Teacher labels for the unlabelled pool (None when no teacher is named)."""
    log = get_run_logger()
    if spec.labeling.teacher is None:
        log.info("%s: labeling.teacher is not set; the pool waits for review", spec.name)
        return None
    run = flywheel.teacher_label(spec, settings.store_handle())
    log.info(
        "%s: teacher %s labelled %d of %d rows (%d at or above %.2f confidence); %d unknown label, %d failed; "
        "%d+%d tokens, cost %.4f, %.1f s",
        spec.name,
        run.teacher,
        run.labelled,
        run.asked,
        run.confident,
        spec.labeling.min_confidence,
        run.unknown_label,
        run.failed,
        run.tokens_in,
        run.tokens_out,
        run.cost,
        run.seconds,
    )
    for problem in run.problems:
        log.warning("%s: %s", spec.name, problem)
    return run


@task(name="review-queue", cache_policy=NONE)
def review_queue(spec: SpecialistSpec, settings: Settings) -> dict[str, int]:
    """Rank the review queue (the champion answers new pooled rows once) and show its top in the UI."""
    store = settings.store_handle()
    st = flywheel.state(spec, store)  # read once: the pool and the labels, for the queue and its counts
    queue = flywheel.review_queue(spec, store, st)
    top = queue.head(spec.labeling.review_size)
    create_table_artifact(
        key=f"{spec.name}-review-queue",
        table=[
            {"priority": round(float(r["priority"]), 3), "text": str(r["text"])[:120], "reason": r["reason"]}
            for r in top.to_dict("records")
        ],
        description=f"{spec.name}: the {len(top)} of {len(queue)} queued rows a human label would help most "
        f"(`fleet review {spec.name}`)",
    )
    counts = flywheel.summary(spec, store, st)
    get_run_logger().info("%s: %s", spec.name, counts)
    return counts


@task(name="emit-pool-event", cache_policy=NONE)
def emit_pool_grew(spec: SpecialistSpec, awaiting: int) -> str | None:
    event = emit_event(
        event=POOL_EVENT,
        resource={
            "prefect.resource.id": f"fleet.specialist.{spec.name}",
            "prefect.resource.name": spec.name,
            "fleet.name": spec.name,
        },
        payload={"awaiting_teacher": awaiting, "trigger_rows": spec.labeling.trigger_rows},
    )
    return str(event.id) if event else None


@task(name="pool-size", cache_policy=NONE)
def awaiting_teacher(spec: SpecialistSpec, settings: Settings) -> int:
    """Pooled rows no teacher or human labelled yet (0 without a champion or a teacher)."""
    if spec.labeling.teacher is None:
        return 0
    try:
        return flywheel.summary(spec, settings.store_handle())["awaiting_teacher"]
    except flywheel.LabelingError:
        return 0
