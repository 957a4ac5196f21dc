"""Do the committed locks install on the supported platforms, from the public index alone? (issue 30, item 1)

Run before each lock change (after `make lock`). For each target (Linux x86_64 and aarch64, macOS arm64; Python
3.11, 3.12, 3.13) pip resolves the locks as `make install` installs them, with this machine's pip
configuration switched off (PIP_CONFIG_FILE=os.devnull, no PIP_* variables but the certificate bundle, no
constraints) and `--platform/--python-version/--only-binary :all:`, environment markers evaluated as the target
(requirements/lock.py's PIP_AS_TARGET):

- dev: requirements/dev.lock with cuda.lock on Linux (the public index's torch loads those CUDA libraries;
  with TORCH=cpu, torch-cpu.lock's CPU build replaces that torch and needs none of them);
- cpu: requirements/torch-cpu.lock from PyTorch's CPU index (recorded as unchecked where it cannot be reached);
- image: requirements/image.lock with cuda.lock (Linux, the image's Python);
- models: requirements/models.lock (installed --no-deps).
A target resolves when pip finds every package (in --require-hashes mode: no unpinned dependency) and each
chosen file's SHA-256 is among its entry's hashes; else the record names the first unresolvable requirement.
llama-cpp-python (requirements/llama.lock) is a source archive built by `make install`: excepted.

`--clean-install` also times one real `make install` in a copy of the checkout with the same pip
configuration switched off (torch: TORCH=cuda unless --torch cpu; the CPU index must then answer).
Writes benchmarks/results/portability.json (or --out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
_spec = importlib.util.spec_from_file_location("fleet_lock", REQ / "lock.py")
lock = importlib.util.module_from_spec(_spec)
sys.modules["fleet_lock"] = lock
_spec.loader.exec_module(lock)  # type: ignore[union-attr]


def locked_hashes(*paths: Path) -> dict[str, set[str]]:
    """{package: every hash its entries allow} of the lock files."""
    out: dict[str, set[str]] = {}
    for path in paths:
        for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
            m = re.match(r"([A-Za-z0-9._-]+)==", block)
            if m:
                out.setdefault(lock.normalise(m.group(1)), set()).update(re.findall(r"sha256:(\w+)", block))
    return out


def without_sources(path: Path, folder: Path) -> Path:
    """A copy of the lock without the source-only packages' entries (their sdists cannot be resolved for another
    platform with --only-binary; their dependencies are entries of their own)."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    kept = [b for b in blocks if lock.requirement_name(b.split()[0]) not in lock.SOURCE_ONLY]
    copy = folder / path.name
    copy.write_text("\n".join(kept))
    return copy


def check(target, locks: list[Path], extra: list[str] | None = None) -> dict:
    """Resolve ``locks`` for ``target`` as --require-hashes installs them; compare each chosen file's hash."""
    args = ["--require-hashes", *(extra or [])]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for path in locks:
            args += ["-r", str(without_sources(path, Path(tmp)))]
        installs, error = lock.dry_run(target, args)
    record: dict = {"locks": [p.name for p in locks], "seconds": round(time.perf_counter() - started, 1)}
    if error:
        return {**record, "resolved": False, "first_unresolvable": error}
    allowed = locked_hashes(*locks)
    for pick in lock.picks(installs):
        if pick.sha256 not in allowed.get(pick.name, set()):
            return {
                **record,
                "resolved": False,
                "first_unresolvable": f"{pick.name}=={pick.version}: {pick.url} not hashed",
            }
    return {**record, "resolved": True, "packages": len(installs)}


def cpu_index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{lock.CPU_INDEX}/torch/", timeout=15):
            return True
    except OSError:
        return False


def dry_runs(targets: list) -> dict:
    cpu_reachable = cpu_index_reachable()
    results = {}
    for t in targets:
        linux = t.platform.name.startswith("linux")
        cuda = [REQ / "cuda.lock"] if linux else []
        row = {"dev": check(t, [REQ / "dev.lock", *cuda])}
        if cpu_reachable:
            row["cpu"] = check(t, [REQ / "torch-cpu.lock"], ["--no-deps", "--extra-index-url", lock.CPU_INDEX])
        else:
            row["cpu"] = {"resolved": None, "note": f"{lock.CPU_INDEX} did not answer from this machine: unchecked"}
        if linux and t.python == lock.IMAGE_PYTHON:
            row["image"] = check(t, [REQ / "image.lock", *cuda])
        row["models"] = check(t, [REQ / "models.lock"], ["--no-deps"])
        results[t.name] = row
        print(t.name, {k: v["resolved"] for k, v in row.items()}, file=sys.stderr)
    return results


def clean_install(torch: str) -> dict:
    """One real `make install` from the public index, in a copy of the checkout (its tracked files)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        checkout = Path(tmp) / "checkout"
        for name in filter(None, files.decode().split("\0")):
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
        env = lock.public_pip_env()
        home = Path(tmp) / "home"  # an empty home: no pip cache (the Makefile's llama.cpp build cache included)
        home.mkdir()
        env.update(HOME=str(home), PIP_NO_CACHE_DIR="1")
        env.pop("XDG_CACHE_HOME", None)
        started = time.perf_counter()
        r = subprocess.run(
            ["make", "install", f"TORCH={torch}", f"PYTHON={sys.executable}"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        record = {
            "torch": torch,
            "seconds": round(seconds, 1),
            "ok": r.returncode == 0,
            "what": "make install in a copy of the checkout, an empty HOME (no pip cache: llama.cpp built from "
            "source), the public index alone",
        }
        if r.returncode != 0:
            record["error"] = (r.stderr or r.stdout)[-1500:]
            return record
        py = checkout / ".venv" / "bin" / "python"
        probe = "import torch, transformers, peft, mlflow, prefect, llama_cpp, fleet; print(torch.__version__)"
        out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=env)
        record["import_check"] = out.stdout.strip() or out.stderr[-500:]
        freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, env=env).stdout
        record["packages"] = len(freeze.splitlines())
        record["nvidia_packages"] = sum(line.startswith("nvidia-") for line in freeze.splitlines())
        return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "portability.json")
    parser.add_argument("--clean-install", action="store_true", help="also time one real install (minutes)")
    parser.add_argument("--torch", choices=("cpu", "cuda"), default="cuda", help="the clean install's TORCH")
    args = parser.parse_args(argv)
    targets = lock.targets()
    result: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "pip_configuration": "PIP_CONFIG_FILE=os.devnull, no PIP_* variables but PIP_CERT, no constraints",
        "excepted": "source archives: llama-cpp-python (requirements/llama.lock, built by make install) and "
        + ", ".join(sorted(lock.SOURCE_ONLY))
        + " (pure Python, no wheel on the index; their dependencies are checked)",
        "targets": dry_runs(targets),
    }
    result["all_resolved"] = all(
        row[k]["resolved"] for row in result["targets"].values() for k in row if row[k]["resolved"] is not None
    )
    if args.clean_install:
        result["clean_install"] = clean_install(args.torch)
    elif args.out.exists() and "clean_install" in (before := json.loads(args.out.read_text())):
        result["clean_install"] = {**before["clean_install"], "measured": before.get("when")}  # kept, not re-run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} (all resolved: {result['all_resolved']})", file=sys.stderr)
    sys.exit(0 if result["all_resolved"] else 1)


if __name__ == "__main__":
    main()
