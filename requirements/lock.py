"""Make the locks from the public index alone, for every supported platform (issue 30).

    python requirements/lock.py            # re-resolve: writes dev.lock, cuda.lock, torch-cpu.lock, image.lock

pip resolves for one platform at a time, so each lock is the union of one resolution per target (platform x
Python): `pip install --dry-run --ignore-installed --report` with `--platform/--python-version/--only-binary`,
this machine's pip configuration switched off (PIP_CONFIG_FILE=os.devnull, no PIP_* variables but the
certificate bundle), metadata read by HTTP range requests (pip's fast-deps) so no wheel is downloaded. A
package picked at one version by every target gets one line with the hashes of every file the targets chose;
otherwise each version gets an environment marker naming its targets.

The files (none names an index, a folder or a machine):
- dev.lock: the project with its demo, test and llm-server extras and llama-cpp-python's dependencies, torch
  pinned as `torch==X` with the hashes of the public index's wheels for every target; no CUDA libraries;
- cuda.lock: the CUDA libraries (nvidia-*, triton, cuda-*) that the public index's Linux torch loads, with
  markers; `make install TORCH=cuda` adds them;
- torch-cpu.lock: PyTorch's CPU-only builds (Linux `torch==X+cpu`, macOS's one wheel), with the hashes listed
  by https://download.pytorch.org/whl/cpu/torch/; `make install TORCH=cpu` installs it first from that index,
  and dev.lock's `torch==X` is then already satisfied;
- image.lock: the image's packages (Linux targets, the image's Python), at dev.lock's versions.
llama-cpp-python (an sdist, built by the Makefile) keeps its own llama.lock.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHONS = ("3.11", "3.12", "3.13")
DEV_EXTRAS = ("demo", "test", "llm-server")
IMAGE_EXTRAS = ("lang",)
IMAGE_PYTHON = "3.11"  # infra/Dockerfile's BASE_IMAGE
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_ONLY = re.compile(r"nvidia-.*|triton|cuda-.*")
LLAMA = "llama-cpp-python"
SOURCE_ONLY = {"langid"}  # no wheel on the index: pinned by its sdist's hash, its dependencies resolved


@dataclass(frozen=True)
class Platform:
    name: str
    tags: tuple[str, ...]  # pip does not widen --platform: each compatible tag is named
    marker: str
    environment: tuple[tuple[str, str], ...]  # the marker variables pip must see for this platform


def _manylinux(machine: str) -> tuple[str, ...]:
    return (
        *(f"manylinux_2_{minor}_{machine}" for minor in range(28, 16, -1)),
        f"manylinux2014_{machine}",
    )


def _macos() -> tuple[str, ...]:
    return (
        *(f"macosx_{major}_0_{arch}" for major in range(14, 10, -1) for arch in ("arm64", "universal2")),
        *(f"macosx_10_{minor}_universal2" for minor in range(16, 8, -1)),
    )


def _platform(name: str, tags: tuple[str, ...], system: str, machine: str) -> Platform:
    sys_platform = system.lower()
    marker = f'sys_platform == "{sys_platform}" and platform_machine == "{machine}"'
    env = (
        ("sys_platform", sys_platform),
        ("platform_system", system),
        ("platform_machine", machine),
        ("os_name", "posix"),
    )
    return Platform(name, tags, marker, env)


PLATFORMS = (
    _platform("linux-x86_64", _manylinux("x86_64"), "Linux", "x86_64"),
    _platform("linux-aarch64", _manylinux("aarch64"), "Linux", "aarch64"),
    _platform("macos-arm64", _macos(), "Darwin", "arm64"),
)

# pip evaluates environment markers (`; sys_platform == "linux"`, `; python_version < "3.12"`) against the
# interpreter that runs it, whatever --platform and --python-version say; this runs pip with the target's
# marker variables instead, so a macOS resolution does not take Linux-only dependencies.
PIP_AS_TARGET = """
import json, sys
from pip._vendor.packaging import markers
env = {**markers.default_environment(), **json.loads(sys.argv[1])}
markers._cached_default_environment = lambda: env
markers.default_environment = lambda: dict(env)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass(frozen=True)
class Target:
    platform: Platform
    python: str

    @property
    def name(self) -> str:
        return f"{self.platform.name}-py{self.python}"

    @property
    def environment(self) -> dict[str, str]:
        return {
            **dict(self.platform.environment),
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
        }


@dataclass(frozen=True)
class Pick:
    name: str  # normalised
    version: str
    sha256: str
    url: str


def targets(platforms=PLATFORMS, pythons=PYTHONS) -> list[Target]:
    return [Target(p, v) for p in platforms for v in pythons]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public_pip_env() -> dict[str, str]:
    """The environment of a pip that sees the public index alone, as on a user's machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def dry_run(target: Target | None, args: list[str], python: str = sys.executable) -> tuple[list[dict], str]:
    """pip's report of what it would install for ``target`` (None: this interpreter), and pip's error text."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip = [python, "-m", "pip"] if target is None else [python, "-c", PIP_AS_TARGET, json.dumps(target.environment)]
        cmd = [*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        if target is not None:
            cmd += ["--only-binary", ":all:", "--python-version", target.python, "--implementation", "cp"]
            cmd += ["--use-feature", "fast-deps"]
            for tag in target.platform.tags:
                cmd += ["--platform", tag]
        r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=public_pip_env(), cwd=ROOT)
        if r.returncode != 0 or not report.exists():
            return [], _pip_error(r.stderr)
        return json.loads(report.read_text())["install"], ""


def _pip_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    return " | ".join(lines[-3:]) or stderr.strip()[-500:]


def picks(installs: list[dict]) -> list[Pick]:
    out = []
    for item in installs:
        info = item["download_info"]
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256", "")
        out.append(Pick(normalise(item["metadata"]["name"]), item["metadata"]["version"], sha, info["url"]))
    return out


def project_requirements(extras: tuple[str, ...]) -> list[str]:
    """pyproject.toml's dependencies and those of ``extras``, llama-cpp-python left out (its own lock)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [r for r in reqs if requirement_name(r) != LLAMA]


def requirement_name(req: str) -> str:
    return normalise(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0])


@dataclass(frozen=True)
class Source:
    """A package the index has as source only: its pinned entry, and its dependencies to resolve per target."""

    entry: str
    requires: list[str]


@functools.cache  # the dev and the image lock ask for the same packages: one metadata build each
def source_package(req: str, extra: str = "") -> Source:
    """Resolve ``req`` (an sdist-only package) here, without its dependencies; read its metadata."""
    installs, error = dry_run(None, ["--no-deps", req])
    if error:
        sys.exit(f"requirements/lock.py: could not read the metadata of {req}: {error}")
    (pick,) = picks(installs)
    requires = []
    for dep in installs[0]["metadata"].get("requires_dist", []):
        spec, _, marker = dep.partition(";")
        if not marker.strip() or (extra and re.fullmatch(rf'\s*extra\s*==\s*"{extra}"\s*', marker)):
            requires.append(spec.strip())
    return Source(f"{pick.name}=={pick.version} \\\n    --hash=sha256:{pick.sha256}", requires)


def split_sources(reqs: list[str]) -> tuple[list[str], list[str]]:
    """``reqs`` with the sdist-only packages replaced by their dependencies, and those packages' entries."""
    kept, pinned = [], []
    for req in reqs:
        if requirement_name(req) in SOURCE_ONLY:
            source = source_package(req)
            pinned.append(source.entry)
            kept += source.requires
        else:
            kept.append(req)
    return kept, pinned


def llama_requirements() -> list[str]:
    """llama-cpp-python[server]'s own dependencies (its sdist's metadata; the package itself is llama.lock's)."""
    pin = next(r for r in (HERE / "llama.lock").read_text().splitlines() if r.startswith(f"{LLAMA}=="))
    return source_package(pin.split()[0], extra="server").requires


def locked_versions(path: Path) -> list[str]:
    """A lock's pins as constraints (a local label dropped, markers kept), so re-locking keeps tested versions."""
    if not path.exists():
        return []
    found = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\+]+)[^\s;\\]*( ; [^\\\n]*)?", path.read_text(), re.M)
    return [f"{name}=={version}{marker.rstrip()}" for name, version, marker in found]


def resolve(reqs: list[str], tgts: list[Target], constraints: list[str]) -> dict[Target, list[Pick]]:
    with tempfile.TemporaryDirectory() as tmp:
        req_file, constraint_file = Path(tmp) / "requirements.in", Path(tmp) / "constraints.txt"
        req_file.write_text("\n".join(reqs) + "\n")
        constraint_file.write_text("\n".join(constraints) + "\n")
        args = ["-r", str(req_file), "-c", str(constraint_file)]

        def one(t: Target) -> tuple[Target, list[Pick]]:
            installs, error = dry_run(t, args)
            if error:
                sys.exit(f"requirements/lock.py: {t.name} does not resolve: {error}")
            print(f"  {t.name}: {len(installs)} packages", file=sys.stderr)
            return t, picks(installs)

        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(pool.map(one, tgts))


def marker_for(chosen: set[Target], all_targets: list[Target]) -> str:
    """The environment marker true on exactly the targets ``chosen`` (of ``all_targets``); '' for all."""
    if chosen == set(all_targets):
        return ""
    pythons = sorted({t.python for t in all_targets})
    chosen_pythons = sorted({t.python for t in chosen})
    if chosen == {t for t in all_targets if t.python in chosen_pythons}:  # every platform, some Pythons
        return " or ".join(f'python_version == "{v}"' for v in chosen_pythons)
    parts = []
    for p in dict.fromkeys(t.platform for t in all_targets):
        versions = sorted(t.python for t in chosen if t.platform == p)
        if not versions:
            continue
        if versions == pythons:
            parts.append(f"({p.marker})")
        else:
            pys = " or ".join(f'python_version == "{v}"' for v in versions)
            parts.append(f"({p.marker} and ({pys}))")
    return " or ".join(parts)


def entries(resolved: dict[Target, list[Pick]], keep) -> list[str]:
    """One lock entry per (package, version): hashes of every file chosen, marker of the targets choosing it."""
    chosen: dict[tuple[str, str], set[Target]] = defaultdict(set)
    hashes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t, ps in resolved.items():
        for p in ps:
            if keep(p.name):
                chosen[p.name, p.version].add(t)
                hashes[p.name, p.version].add(p.sha256)
    all_targets = list(resolved)
    out = []
    for (name, version), tgts in sorted(chosen.items()):
        marker = marker_for(tgts, all_targets)
        line = f"{name}=={version}" + (f" ; {marker}" if marker else "")
        out.append(" \\\n".join([line, *(f"    --hash=sha256:{h}" for h in sorted(hashes[name, version]))]))
    return out


def write(path: Path, header: str, body: list[str]) -> None:
    text = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.strip().splitlines())
    path.write_text(text + "\n" + "\n".join(body) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(body)} entries)", file=sys.stderr)


def cpu_torch_hashes(version: str) -> dict[str, str]:
    """{wheel file name: sha256} of torch ``version`` on PyTorch's CPU index (PEP 503 page, #sha256= links)."""
    with urllib.request.urlopen(f"{CPU_INDEX}/torch/", timeout=30) as page:
        html = page.read().decode()
    found = re.findall(r'href="[^"]*/(torch-[^"#/]+\.whl)#sha256=([0-9a-f]{64})"', html)
    return {name.replace("%2B", "+"): sha for name, sha in found if name.startswith(f"torch-{version}")}


def torch_cpu_entries(version: str) -> list[str]:
    wanted = {
        "linux": [
            f"torch-{version}+cpu-cp{v.replace('.', '')}-cp{v.replace('.', '')}-manylinux_2_28_{m}.whl"
            for v in PYTHONS
            for m in ("x86_64", "aarch64")
        ],
        "darwin": [
            f"torch-{version}-cp{v.replace('.', '')}-cp{v.replace('.', '')}-macosx_14_0_arm64.whl" for v in PYTHONS
        ],
    }
    try:
        listed = cpu_torch_hashes(version)
    except OSError as exc:
        sys.exit(f"requirements/lock.py: {CPU_INDEX} did not answer ({exc}); torch-cpu.lock left as it is")
    missing = [f for files in wanted.values() for f in files if f not in listed]
    if missing:
        sys.exit(f"requirements/lock.py: {CPU_INDEX} lists no {', '.join(missing)}")
    return [
        f'torch=={version}+cpu ; sys_platform == "linux" \\\n'
        + " \\\n".join(f"    --hash=sha256:{listed[f]}" for f in wanted["linux"]),
        f'torch=={version} ; sys_platform == "darwin" \\\n'
        + " \\\n".join(f"    --hash=sha256:{listed[f]}" for f in wanted["darwin"]),
    ]


def image_constraints(resolved: dict[Target, list[Pick]]) -> list[str]:
    """dev.lock's versions on the image's targets (Linux, the image's Python), as constraints."""
    versions: dict[str, set[str]] = defaultdict(set)
    for t, ps in resolved.items():
        if t.platform in PLATFORMS[:2] and t.python == IMAGE_PYTHON:
            for p in ps:
                versions[p.name].add(p.version)
    return sorted(f"{name}=={v.pop()}" for name, v in versions.items() if len(v) == 1)


def lock(upgrade: set[str]) -> None:
    print("resolving the dev lock per platform", file=sys.stderr)
    dev_reqs, sources = split_sources(project_requirements(DEV_EXTRAS) + llama_requirements())
    keep = (
        []
        if "all" in upgrade
        else [c for c in locked_versions(HERE / "dev.lock") if requirement_name(c) not in upgrade]
    )
    resolved = resolve(dev_reqs, targets(), keep)
    dev = sorted(entries(resolved, lambda n: not CUDA_ONLY.fullmatch(n)) + sources)
    write(HERE / "dev.lock", DEV_HEADER, dev)
    write(HERE / "cuda.lock", CUDA_HEADER, entries(resolved, lambda n: CUDA_ONLY.fullmatch(n) is not None))
    torch = {p.version for ps in resolved.values() for p in ps if p.name == "torch"}
    if len(torch) != 1:
        sys.exit(f"requirements/lock.py: torch resolved to {sorted(torch)} across platforms; pin one version")
    print("resolving the image lock (Linux, the image's Python)", file=sys.stderr)
    image_in = [line for line in (HERE / "image.in").read_text().splitlines() if line.strip()]
    image_reqs, sources = split_sources(project_requirements(IMAGE_EXTRAS) + llama_requirements() + image_in)
    image = resolve(image_reqs, targets(PLATFORMS[:2], (IMAGE_PYTHON,)), image_constraints(resolved))
    write(HERE / "image.lock", IMAGE_HEADER, sorted(entries(image, lambda n: not CUDA_ONLY.fullmatch(n)) + sources))
    write(HERE / "torch-cpu.lock", CPU_HEADER, torch_cpu_entries(torch.pop()))


DEV_HEADER = f"""
Made by requirements/lock.py from pyproject.toml ({", ".join(DEV_EXTRAS)}) and {LLAMA}[server]'s dependencies,
for {", ".join(p.name for p in PLATFORMS)} and Python {", ".join(PYTHONS)}, from the public index alone.
Install with --require-hashes --no-deps after torch-cpu.lock (TORCH=cpu) or cuda.lock (TORCH=cuda): see the Makefile.
"""
CUDA_HEADER = """
Made by requirements/lock.py: the CUDA libraries the public index's Linux torch wheels load (make TORCH=cuda).
"""
CPU_HEADER = f"""
Made by requirements/lock.py: PyTorch's CPU-only builds as {CPU_INDEX}/torch/ lists them (make TORCH=cpu,
the default without an NVIDIA GPU). Linux names the +cpu build; macOS's one wheel is CPU/MPS already.
"""
IMAGE_HEADER = f"""
Made by requirements/lock.py: the image's packages (pyproject.toml's {", ".join(IMAGE_EXTRAS)} extra,
requirements/image.in, {LLAMA}[server]'s dependencies) for Linux x86_64 and aarch64, Python {IMAGE_PYTHON},
at dev.lock's versions. Torch comes from torch-cpu.lock (the Dockerfile's TORCH=cpu) or cuda.lock.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--upgrade",
        action="append",
        default=[],
        metavar="NAME",
        help="let NAME move from dev.lock's version (repeat; 'all' re-resolves everything); others keep theirs",
    )
    args = parser.parse_args(argv)
    lock({normalise(n) for n in args.upgrade})


if __name__ == "__main__":
    main()
