"""deployments/prefect.yaml and the served deployments agree with the fleet file and the code."""

import yaml
from prefect.flows import load_flow_from_entrypoint

from conftest import DEMO_FLEET, ROOT


def test_prefect_yaml_matches_the_fleet_and_the_code():
    from fleet.kinds import load_fleet
    from tasks.drift import DRIFT_EVENT

    doc = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert "definitions" in doc
    deps = {d["name"]: d for d in doc["deployments"]}
    from tasks.labeling import POOL_EVENT

    for name, spec in load_fleet(DEMO_FLEET).specialists.items():
        assert deps[f"monitor-{name}"]["parameters"]["name"] == name
        label = deps[f"label-{name}"]
        assert label["parameters"]["name"] == name and label["schedules"][0]["cron"] == spec.labeling.schedule
        [pool_trigger] = label["triggers"]
        assert pool_trigger["expect"] == [POOL_EVENT]
        assert pool_trigger["match"] == {"prefect.resource.id": f"fleet.specialist.{name}"}
    for d in deps.values():
        assert ".py" not in d["entrypoint"]  # module paths (see the file's header)
        assert load_flow_from_entrypoint(d["entrypoint"]).name in (
            "fleet",
            "monitor",
            "retrain",
            "specialist",
            "score",
            "label",
            "watchdog",
        )
    [trigger] = deps["retrain-on-drift"]["triggers"]
    assert trigger["expect"] == [DRIFT_EVENT] and trigger["parameters"]["name"] == "{{ event.resource['fleet.name'] }}"


def test_served_deployments_have_schedules_and_the_drift_trigger(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    from flows.deployments import runner_deployments

    deps = {d.name: d for d in runner_deployments(str(DEMO_FLEET), "0 3 * * *")}
    assert set(deps) == {
        "fleet-train",
        "monitor-sms-spam",
        "monitor-support-sentiment",
        "monitor-invoice-extractor",
        "label-sms-spam",
        "label-support-sentiment",
        "label-invoice-extractor",
        "specialist",
        "score",
        "retrain-on-drift",
        "watchdog",
    }
    assert deps["watchdog"].schedules  # stuck runs found even when no fleet run waits for them
    assert deps["monitor-sms-spam"].schedules and deps["fleet-train"].schedules
    [trigger] = deps["retrain-on-drift"].triggers
    assert trigger.expect == {"fleet.specialist.drift-detected"}
    [pool] = deps["label-sms-spam"].triggers
    assert pool.expect == {"fleet.pool.grew"} and pool.match.model_dump() == {
        "prefect.resource.id": "fleet.specialist.sms-spam"
    }
    assert deps["label-sms-spam"].schedules
    assert all(".py" not in d.entrypoint for d in deps.values())
