"""All (or some) specialists of a fleet, fanned out through the task runner chosen in settings.

- ``threads`` (default): specialists run side by side in this process (``FLEET_MAX_WORKERS`` at once).
- ``dask``: each specialist runs in a Dask worker, of a local cluster (``FLEET_DASK_WORKERS`` processes)
  or of the cluster at ``FLEET_DASK_ADDRESS``.
- ``deployments``: each specialist is one run of the ``specialist`` deployment (``FLEET_SPECIALIST_DEPLOYMENT``)
  on its work pool, so each can get its own machine or GPU pod; this flow waits for them all. The fleet file
  (and the data files beside it that it names) travels through the object store (``fleet.core.shipping``):
  the workers share nothing with this process but the servers.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from fleet.core.results import FleetRunError, SpecialistResult
from fleet.core.settings import Settings
from fleet.ops import heartbeats
from flows.specialist import DEFAULT_FLEET_FILE, specialist_flow
from tasks import specialist as t
from tasks import watchdog


def task_runner(settings: Settings):
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        # One thread per worker process: a specialist's training already uses the process's cores.
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.max_workers)


@task(name="specialist", task_run_name="{name}", cache_policy=NONE)
def run_specialist(name: str, fleet_file: str, trigger: str) -> SpecialistResult:
    """One specialist's flow, as a subflow of this task (in a thread or a Dask worker)."""
    Settings.load().apply()  # a Dask worker is a fresh process: export the settings there too
    return specialist_flow(name=name, fleet_file=fleet_file, trigger=trigger)


@task(name="specialist-deployment", task_run_name="{name}", cache_policy=NONE)
def run_specialist_deployment(
    name: str, fleet_file: str, trigger: str, deployment: str, work_queue: str | None = None
) -> SpecialistResult:
    """Runs of the specialist deployment (on workers elsewhere) until one completes: a run that crashed, or
    that the watchdog found stuck (``tasks.watchdog``), is started again, up to ``specialist_attempts`` runs,
    on whichever worker takes it; a run that failed (the specialist's own error) is not. ``work_queue``: the
    pool's queue for it (the GPU queue for `compute: gpu`). Its result comes back through the object store,
    with where each attempt ran."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    settings, logger = Settings.load(), get_run_logger()
    attempts: list[str] = []
    for attempt in range(1, settings.specialist_attempts + 1):
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # called from sync code: a FlowRun
            deployment,
            parameters={"name": name, "fleet_file": fleet_file, "trigger": trigger},
            flow_run_name=name,
            work_queue_name=work_queue,
            timeout=0,  # returns at once: the watchdog waits
            as_subflow=True,
        )
        state = watchdog.wait_for(run.id, name, settings, logger)
        beat = heartbeats.last(settings.store_handle(), str(run.id))
        attempts.append(f"attempt {attempt} (run {run.id}): {state.name} on {beat['on'] if beat else 'no worker'}")
        logger.info("%s: %s", name, attempts[-1])
        if state.is_completed():
            result = t.stored_result(settings, str(run.id))
            result.attempts = attempts
            t.store_result(settings, result, str(run.id))  # with where each attempt ran
            return result
        if not state.is_crashed():
            raise RuntimeError(f"{name}: deployment run {run.name} ({run.id}) ended {state.name}: {state.message}")
    raise RuntimeError(f"{name}: no run completed in {len(attempts)} attempt(s): {'; '.join(attempts)}")


@flow(name="fleet", flow_run_name="fleet-{trigger}")
def fleet_flow(
    fleet_file: str = DEFAULT_FLEET_FILE, only: list[str] | None = None, trigger: str = "manual"
) -> list[SpecialistResult]:
    """Run every selected specialist through the settings' task runner; one failure does not stop the others."""
    settings = Settings.load().apply()
    selected = t.load_fleet_spec(fleet_file, settings).select(only)
    names = [s.name for s in selected]
    get_run_logger().info(
        "%d specialist(s) through the %s runner: %s", len(names), settings.task_runner, ", ".join(names)
    )
    runner = task_runner(settings) if settings.task_runner != "deployments" else ThreadPoolTaskRunner(len(names) or 1)
    with runner.duplicate() as r:
        if settings.task_runner == "deployments":
            shipped = t.ship_fleet(fleet_file, settings)
            queues = {s.name: t.work_queue(s, settings) for s in selected}
            futures = {
                n: r.submit(
                    run_specialist_deployment,
                    {
                        "name": n,
                        "fleet_file": shipped,
                        "trigger": trigger,
                        "deployment": settings.specialist_deployment,
                        "work_queue": queues[n],
                    },
                )
                for n in names
            }
        else:
            futures = {
                n: r.submit(run_specialist, {"name": n, "fleet_file": fleet_file, "trigger": trigger}) for n in names
            }
        for f in futures.values():
            f.wait()
        states = {n: f.state for n, f in futures.items()}
    results = t.summarize(states)
    t.publish_summary(results)
    if any(r.status == "failed" for r in results):
        raise FleetRunError(results)
    return results
