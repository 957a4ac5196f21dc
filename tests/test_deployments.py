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
    for name in load_fleet(DEMO_FLEET).specialists:
        assert deps[f"monitor-{name}"]["parameters"]["name"] == name
    for d in deps.values():
        assert ".py" not in d["entrypoint"]  # module paths (see the file's header)
        assert load_flow_from_entrypoint(d["entrypoint"]).name in ("fleet", "monitor", "retrain", "specialist", "score")
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
        "specialist",
        "score",
        "retrain-on-drift",
    }
    assert deps["monitor-sms-spam"].schedules and deps["fleet-train"].schedules
    [trigger] = deps["retrain-on-drift"].triggers
    assert trigger.expect == {"fleet.specialist.drift-detected"}
    assert all(".py" not in d.entrypoint for d in deps.values())
