"""The fleet's Prefect deployments: scheduled training and monitoring, retraining on drift events, and one
specialist at a time (what the fleet flow runs per specialist with FLEET_TASK_RUNNER=deployments).

`fleet serve` serves them all from one process; `fleet deploy` registers them with a work pool (the fleet
file shipped through the object store, so workers on other machines need only the servers).
"""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger

from fleet.core import shipping
from fleet.core.storage import ObjectStore
from fleet.kinds import load_fleet
from flows.fleet_run import fleet_flow
from flows.label import label_flow
from flows.monitor import monitor_flow
from flows.retrain import retrain_flow
from flows.score import score_flow
from flows.specialist import specialist_flow
from flows.watchdog import watchdog_flow
from tasks.drift import DRIFT_EVENT
from tasks.labeling import POOL_EVENT


def drift_trigger(fleet_file: str) -> DeploymentEventTrigger:
    """Run the retrain deployment for the specialist named in the drift event (one run per event;
    the flow's per-specialist lock and cooldown turn bursts into a single retrain)."""
    return DeploymentEventTrigger(
        name="retrain-on-drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": "fleet.specialist.*"},
        parameters={
            "name": "{{ event.resource['fleet.name'] }}",
            "drift_report": "{{ event.payload.report_id }}",
            "fleet_file": fleet_file,
        },
    )


def pool_trigger(name: str, fleet_file: str) -> DeploymentEventTrigger:
    """Run a specialist's label deployment when the monitor reports enough rows awaiting a label."""
    return DeploymentEventTrigger(
        name=f"label-{name}-on-pool-growth",
        expect={POOL_EVENT},
        match={"prefect.resource.id": f"fleet.specialist.{name}"},
        parameters={"name": name, "fleet_file": fleet_file},
    )


def specs(fleet_file: str, train_cron: str | None, fleet_parameter: str | None = None) -> list[dict]:
    """What to deploy: (flow, name, parameters, schedule or triggers) for every deployment; their
    ``fleet_file`` is ``fleet_parameter`` (a shipped copy) or the fleet file's absolute path."""
    fleet = load_fleet(fleet_file)
    fleet_file = fleet_parameter or str(Path(fleet_file).resolve())
    out = [
        {
            "flow": fleet_flow,
            "entrypoint": "flows.fleet_run:fleet_flow",
            "name": "fleet-train",
            "parameters": {"fleet_file": fleet_file, "trigger": "schedule"},
            "cron": train_cron,
            "triggers": None,
        }
    ]
    for s in fleet.specialists.values():
        out.append(
            {
                "flow": monitor_flow,
                "entrypoint": "flows.monitor:monitor_flow",
                "name": f"monitor-{s.name}",
                "parameters": {"name": s.name, "fleet_file": fleet_file},
                "cron": s.drift.schedule,
                "triggers": None,
            }
        )
        out.append(
            {
                "flow": label_flow,
                "entrypoint": "flows.label:label_flow",
                "name": f"label-{s.name}",
                "parameters": {"name": s.name, "fleet_file": fleet_file},
                "cron": s.labeling.schedule,
                "triggers": [pool_trigger(s.name, fleet_file)],
            }
        )
    # Run once per specialist by the fleet flow when FLEET_TASK_RUNNER=deployments (no schedule of its own).
    out.append(
        {
            "flow": specialist_flow,
            "entrypoint": "flows.specialist:specialist_flow",
            "name": "specialist",
            "parameters": {"fleet_file": fleet_file},
            "cron": None,
            "triggers": None,
        }
    )
    # Batch scoring, run on demand (`fleet score`, or a run of this deployment with name, source and dest).
    out.append(
        {
            "flow": score_flow,
            "entrypoint": "flows.score:score_flow",
            "name": "score",
            "parameters": {},
            "cron": None,
            "triggers": None,
        }
    )
    # Stuck specialist runs on workers, every 5 minutes (tasks.watchdog.sweep).
    out.append(
        {
            "flow": watchdog_flow,
            "entrypoint": "flows.watchdog:watchdog_flow",
            "name": "watchdog",
            "parameters": {},
            "cron": "*/5 * * * *",
            "triggers": None,
        }
    )
    out.append(
        {
            "flow": retrain_flow,
            "entrypoint": "flows.retrain:retrain_flow",
            "name": "retrain-on-drift",
            "parameters": {"fleet_file": fleet_file},
            "cron": None,
            "triggers": [drift_trigger(fleet_file)],
        }
    )
    return out


def runner_deployments(fleet_file: str, train_cron: str | None = "0 3 * * *"):
    # Module-path entrypoints: the project is installed, so flows load by module path wherever they run.
    return [
        d["flow"].to_deployment(
            name=d["name"],
            parameters=d["parameters"],
            cron=d["cron"],
            triggers=d["triggers"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for d in specs(fleet_file, train_cron)
    ]


def deploy_to_pool(
    fleet_file: str,
    pool: str,
    store: ObjectStore,
    train_cron: str | None = "0 3 * * *",
    only: list[str] | None = None,
) -> list[str]:
    """Register every deployment with a work pool, for workers that share nothing but the servers: no pull
    step (the project is installed where a worker runs; flows load by module path), and the fleet file and
    the data files beside it shipped through the object store, the deployments' ``fleet_file`` naming the
    shipped copy (``only``: these deployments, by name). After changing the fleet file: deploy again."""
    shipped = shipping.ship(fleet_file, store)
    return [
        str(
            d["flow"]
            .to_deployment(
                name=d["name"],
                parameters=d["parameters"],
                cron=d["cron"],
                triggers=d["triggers"],
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
            .apply(work_pool_name=pool)
        )
        for d in specs(fleet_file, train_cron, fleet_parameter=shipped)
        if not only or d["name"] in only
    ]
