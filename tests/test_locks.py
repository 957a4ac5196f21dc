"""The locks install on users' machines (issue 30, item 1): nothing machine-specific committed, torch pinned
without a local label for every supported platform, and requirements/lock.py's per-platform markers exact.
No download: benchmarks/portability.py resolves the locks against the public index."""

from __future__ import annotations

import importlib.util
import re
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.markers import Marker

from conftest import ROOT

REQ = ROOT / "requirements"
spec = importlib.util.spec_from_file_location("fleet_lock", REQ / "lock.py")
lock = importlib.util.module_from_spec(spec)
sys.modules["fleet_lock"] = lock  # dataclasses look their module up
spec.loader.exec_module(lock)

MACHINE_SPECIFIC = re.compile(
    r"file://|/opt/(?!fleet\b)|/home/|/root/|--find-links|--index-url|--extra-index-url|^-f ", re.M
)


def entries(path):
    """[(name, version, marker or '', [hashes])] of a lock."""
    out = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        m = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)(?: ; ([^\\\n]+))?", block)
        if m:
            out.append(
                (lock.normalise(m.group(1)), m.group(2), (m.group(3) or "").strip(), re.findall(r"sha256:(\w+)", block))
            )
    return out


def test_nothing_committed_names_an_index_folder_or_machine():
    for path in [*REQ.glob("*.lock"), *REQ.glob("*.in"), ROOT / ".ci" / "run"]:
        found = MACHINE_SPECIFIC.search(path.read_text())
        assert found is None, f"{path.relative_to(ROOT)} names {found.group(0)!r}"
    # the Makefile and the image name one index: PyTorch's public CPU index, as a variable a user can change
    for path, variable in (
        (ROOT / "Makefile", "$(TORCH_CPU_INDEX)"),
        (ROOT / "infra" / "Dockerfile", "$TORCH_CPU_INDEX"),
    ):
        text = path.read_text()
        assert re.findall(r"--(?:extra-)?index-url \S+", text) == [f"--extra-index-url {variable}"], path.name
        found = MACHINE_SPECIFIC.search(text.replace(f"--extra-index-url {variable}", ""))
        assert found is None, f"{path.relative_to(ROOT)} names {found.group(0)!r}"


def test_torch_is_pinned_without_a_local_label_for_every_platform():
    targets = len(lock.PLATFORMS) * len(lock.PYTHONS)
    for name in ("dev.lock", "image.lock"):
        torch = [e for e in entries(REQ / name) if e[0] == "torch"]
        assert len(torch) == 1 and "+" not in torch[0][1] and torch[0][2] == "", (name, torch)
    (_, _, _, hashes) = next(e for e in entries(REQ / "dev.lock") if e[0] == "torch")
    assert len(hashes) == targets  # one wheel per platform and Python, each different
    cpu = {marker: (version, hashes) for name, version, marker, hashes in entries(REQ / "torch-cpu.lock")}
    assert cpu['sys_platform == "linux"'][0].endswith("+cpu") and len(cpu['sys_platform == "linux"'][1]) == 6
    darwin_version, darwin_hashes = cpu['sys_platform == "darwin"']
    assert darwin_version == torch[0][1] and set(darwin_hashes) <= set(hashes)  # macOS: the public index's wheels
    assert not any(lock.CUDA_ONLY.fullmatch(e[0]) for e in entries(REQ / "dev.lock"))
    assert {e[0] for e in entries(REQ / "cuda.lock")} >= {"triton", "nvidia-cudnn-cu13"}


def test_each_target_gets_exactly_one_entry_of_each_package_it_needs():
    for name in ("dev.lock", "cuda.lock", "image.lock"):
        for target in lock.targets():
            env = target.environment
            seen: dict[str, str] = {}
            for pkg, version, marker, hashes in entries(REQ / name):
                assert hashes, (name, pkg)
                if not marker or Marker(marker).evaluate(env):
                    assert pkg not in seen, f"{name}: two {pkg} entries ({seen[pkg]}, {version}) on {target.name}"
                    seen[pkg] = version
            if name == "dev.lock":
                assert {"torch", "transformers", "peft", "mlflow", "prefect"} <= set(seen), target.name


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_marker_is_true_on_exactly_the_targets_that_chose_the_version(data):
    all_targets = lock.targets()
    chosen = set(data.draw(st.lists(st.sampled_from(all_targets), min_size=1, unique=True)))
    marker = lock.marker_for(chosen, all_targets)
    for t in all_targets:
        assert (not marker or Marker(marker).evaluate(t.environment)) == (t in chosen), (marker, t.name)


def test_entries_merge_the_hashes_of_every_target_and_mark_the_odd_ones():
    a, b, c = lock.targets()[:3]
    resolved = {
        a: [lock.Pick("numpy", "2.0", "aa", "u"), lock.Pick("tzdata", "1", "tt", "u")],
        b: [lock.Pick("numpy", "2.0", "bb", "u")],
        c: [lock.Pick("numpy", "2.1", "cc", "u"), lock.Pick("nvidia-cublas", "13", "nn", "u")],
    }
    out = lock.entries(resolved, lambda n: not lock.CUDA_ONLY.fullmatch(n))
    assert len(out) == 3 and not any("nvidia" in e for e in out)
    numpy20 = next(e for e in out if e.startswith("numpy==2.0"))
    assert "sha256:aa" in numpy20 and "sha256:bb" in numpy20 and "sha256:cc" not in numpy20
    assert Marker(numpy20.split(" ; ")[1].split(" \\")[0]).evaluate(a.environment)


def test_re_locking_keeps_the_locked_versions(tmp_path):
    path = tmp_path / "dev.lock"
    path.write_text(
        'torch==2.13.0+cpu \\\n    --hash=sha256:aa\ntzdata==2026.6 ; python_version == "3.11" \\\n    --hash=sha256:bb\n'
    )
    assert lock.locked_versions(path) == ["torch==2.13.0", 'tzdata==2026.6 ; python_version == "3.11"']


def test_the_hosted_workflow_runs_the_fast_tier_on_every_platform_through_ci_run():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runners = {"ubuntu-24.04": "linux-x86_64", "ubuntu-24.04-arm": "linux-aarch64", "macos-14": "macos-arm64"}
    fast = workflow["jobs"]["fast"]
    matrix = fast["strategy"]["matrix"]
    assert sorted(runners[os] for os in matrix["os"]) == sorted(p.name for p in lock.PLATFORMS)
    assert tuple(matrix["python"]) == lock.PYTHONS
    [run] = [step for step in fast["steps"] if "run" in step]
    assert run["run"].strip() == ".ci/run" and run["env"]["CI_TARGET"] == "test-fast"
    # .ci/run: the same set-up, then the make target CI_TARGET names (the project's CI: `make test`)
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert ci_run.rstrip().endswith('make "${CI_TARGET:-test}" PYTHON="$PYTHON"')
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-fast: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    audit = " ".join(step.get("run", "") for step in workflow["jobs"]["audit"]["steps"])
    assert "pip-audit --disable-pip --require-hashes" in audit and "for lock in requirements/*.lock" in audit
