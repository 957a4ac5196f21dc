"""The bad-input corpus: each case is one wrong fleet file, data file or setting, with the one line that
names what is wrong, the exit code, and a home (registry and store) left byte-for-byte as it was.

Every case runs through `fleet validate` (which trains nothing) and `fleet run` (which must stop before
any work); a few run through the installed console script too, to see the whole output as a person does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.health import free_port, wait_http
from cli.main import app
from conftest import write_toy_fleet

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()
GOOD_ROWS = pd.DataFrame(
    {"text": [f"rain and wind number {i} in town {i * 7}" for i in range(40)], "label": ["weather", "food"] * 20}
)


@dataclass
class Case:
    """``make`` writes what the case needs into ``folder`` and returns the fleet file to run, or an env update."""

    name: str
    make: Callable[[Path, Path], Path]
    message: str
    code: int = 2
    env: Callable[[Path], dict[str, str]] = field(default=lambda _folder: {})


def fleet_with(good: Path, folder: Path, old: str, new: str, name: str = "fleet.yaml") -> Path:
    text = good.read_text()
    assert old in text, old
    (folder / name).write_text(text.replace(old, new))
    return folder / name


def data_case(write: Callable[[Path], None], source: str, extra: str = "") -> Callable[[Path, Path], Path]:
    """A case whose data file is written by ``write``; the fleet file points at it."""

    def make(good: Path, folder: Path) -> Path:
        write(folder / source)
        return fleet_with(good, folder, "source: toy.csv", f"source: {source}{extra}")

    return make


def spec_case(old: str, new: str) -> Callable[[Path, Path], Path]:
    return lambda good, folder: fleet_with(good, folder, old, new)


def raw_fleet(content: bytes) -> Callable[[Path, Path], Path]:
    def make(good: Path, folder: Path) -> Path:
        (folder / "fleet.yaml").write_bytes(content)
        return folder / "fleet.yaml"

    return make


def unchanged_fleet(good: Path, folder: Path) -> Path:
    return good


def frame(df: pd.DataFrame, **kw) -> Callable[[Path], None]:
    return lambda p: df.to_csv(p, index=False, **kw)


def text(content: str, encoding: str = "utf-8") -> Callable[[Path], None]:
    return lambda p: p.write_bytes(content.encode(encoding))


def blob(content: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(content)


def spec_cases() -> list[Case]:
    return [
        Case("unknown field", spec_case("epochs: 3", "epochs: 3, epoch_count: 4"), "epoch_count: unknown field"),
        Case("wrong type", spec_case("epochs: 3", "epochs: three"), "specialists.toy.train.epochs: must be a number"),
        Case(
            "duplicate name",
            spec_case("specialists:\n", "specialists:\n  toy: {data: {source: a.csv}}\n"),
            "duplicate key 'toy'",
        ),
        Case("bad name", spec_case("\n  toy:\n", "\n  Toy Spam!:\n"), "must be lowercase letters, digits and dashes"),
        Case(
            "missing labels",
            spec_case("    labels:\n", "    unused:\n"),
            "specialists.toy.labels: required field is missing",
        ),
        Case("one label only", spec_case("      food: rain and wind\n", ""), "needs at least two labels"),
        Case(
            "unknown base model",
            spec_case("    data:", "    base_model: no-such-org/no-such-model\n    data:"),
            "base model 'no-such-org/no-such-model': not an alias",
        ),
        Case(
            "unknown task",
            spec_case("    data:", "    task: summarize-everything\n    data:"),
            "specialists.toy.task: must be one of",
        ),
        Case("not YAML", raw_fleet(b"specialists:\n  toy: [unclosed\n"), "not valid YAML"),
        Case("not UTF-8", raw_fleet(b"specialists:\n  toy: \xff\xfe\xfa\n"), "not UTF-8 text"),
        Case("not a mapping", raw_fleet(b"- just\n- a list\n"), "top level: must be a mapping"),
        Case("no such fleet file", lambda good, folder: folder / "absent.yaml", "absent.yaml: file not found"),
    ]


def data_cases() -> list[Case]:
    long_row = GOOD_ROWS.copy()
    long_row.loc[3, "text"] = "x" * 10_500_000
    empty_text = GOOD_ROWS.assign(text="")
    return [
        Case("empty data file", data_case(blob(b""), "d.csv"), "d.csv: the file is empty"),
        Case("header only", data_case(text("text,label\n"), "d.csv"), "d.csv: no data rows"),
        Case(
            "wrong columns",
            data_case(frame(GOOD_ROWS.rename(columns={"text": "body"})), "d.csv"),
            "d.csv: missing column(s) text",
        ),
        Case(
            "wrong encoding",
            data_case(frame(GOOD_ROWS.assign(text="café crème brûlée à Noël"), encoding="latin-1"), "d.csv"),
            "are not valid utf-8",
        ),
        Case("UTF-16 file", data_case(frame(GOOD_ROWS, encoding="utf-16"), "d.csv"), "looks like UTF-16"),
        Case(
            "broken quoting",
            data_case(text('text,label\n"rain all day,weather\n' + "snow,weather\n" * 30), "d.csv"),
            "d.csv: not a valid csv file: Error tokenizing data. C error: EOF inside string",
        ),
        Case(
            "broken JSONL",
            data_case(text('{"text": "rain", "label": "weather"}\n{"text": "sun", \n'), "d.jsonl"),
            "d.jsonl: line 2 is not valid JSON",
        ),
        Case(
            "garbage Parquet",
            data_case(blob(b"PAR1 this is not parquet at all" * 20), "d.parquet"),
            "d.parquet: not a valid parquet file",
        ),
        Case(
            "one label in the data",
            data_case(frame(GOOD_ROWS.assign(label="weather")), "d.csv"),
            "has 1 label(s) (weather)",
        ),
        Case(
            "labels not in the spec",
            data_case(frame(GOOD_ROWS.assign(label=["sport", "music"] * 20)), "d.csv"),
            "labels in the file but not in the spec: 'sport' (20), 'music' (20)",
        ),
        Case("a 10 MB row", data_case(frame(long_row), "d.csv"), "d.csv: row 4: text is 10,500,000 characters long"),
        Case("empty fields", data_case(frame(empty_text), "d.csv"), "d.csv: none of its 40 rows has both a text and"),
        Case("unknown format", data_case(blob(b"PK\x03\x04"), "d.xlsx"), "cannot tell the format from '.xlsx'"),
        Case("data is a folder", data_case(lambda p: p.mkdir(), "folder.csv"), "folder.csv: is a folder"),
        Case(
            "missing data file", spec_case("source: toy.csv", "source: nowhere.csv"), "nowhere.csv: data file not found"
        ),
    ]


def settings_cases() -> list[Case]:
    return [
        Case(
            "MLflow server unreachable",
            unchanged_fleet,
            "the MLflow tracking server at http://127.0.0.1:",
            env=lambda f: {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
        ),
        Case(
            "Prefect server unreachable",
            unchanged_fleet,
            "the Prefect server at http://127.0.0.1:",
            env=lambda f: {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"},
        ),
        Case(
            "bad S3 URL",
            unchanged_fleet,
            "expected a folder or s3://BUCKET[/PREFIX]",
            env=lambda f: {"FLEET_STORE": "s3:/no-bucket-here"},
        ),
        Case(
            "S3 endpoint unreachable",
            unchanged_fleet,
            "does not answer",
            env=lambda f: {
                "FLEET_STORE": "s3://fleet-bucket",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
            },
        ),
        Case(
            "bad S3 credentials",
            unchanged_fleet,
            "refused the request (InvalidAccessKeyId)",
            env=lambda f: {
                "FLEET_STORE": "s3://fleet-bucket",
                "AWS_ENDPOINT_URL": os.environ["AUTH_S3"],
                "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1",
                "AWS_SECRET_ACCESS_KEY": "wrong",
            },
        ),
        Case(
            "missing settings file",
            unchanged_fleet,
            "no-such.env: no such settings file",
            env=lambda f: {"FLEET_ENV_FILE": str(f / "no-such.env")},
        ),
    ]


CASES = spec_cases() + data_cases() + settings_cases()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


def home_digest(home: Path) -> dict[str, str]:
    """Every file under the home with the hash of its bytes (the MLflow database, the store, the runs)."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file() and "prefect" not in p.relative_to(home).parts[:1]
    }


@pytest.fixture(scope="module")
def auth_s3():
    """A moto S3 server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, "moto server", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness, auth_s3):
    """A home with the toy specialist trained and registered: the state every case must leave alone."""
    folder = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEET_HOME", str(folder / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("AUTH_S3", auth_s3)
        for var in ("MLFLOW_TRACKING_URI", "FLEET_STORE", "FLEET_ARTIFACT_ROOT", "FLEET_ENV_FILE"):
            mp.delenv(var, raising=False)
        fleet_file = write_toy_fleet(folder / "good")
        result = runner.invoke(app, ["run", "--fleet", str(fleet_file)])
        assert result.exit_code == 0, result.output
        yield folder, fleet_file


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_the_home_alone(case, trained, tmp_path, monkeypatch):
    folder, good = trained
    work = tmp_path / "case"
    work.mkdir()
    (work / "toy.csv").write_bytes((good.parent / "toy.csv").read_bytes())
    fleet_file = case.make(good, work)
    for var, value in case.env(work).items():
        monkeypatch.setenv(var, value)
    home = folder / "home"
    before = home_digest(home)
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, "--fleet", str(fleet_file)])
        out = result.output
        assert result.exit_code == case.code, f"{command}: {out}"
        assert result.exception is None or isinstance(result.exception, SystemExit), f"{command}: {out}"
        assert "Traceback" not in out, out
        lines = [line for line in out.splitlines() if case.message in line]
        assert lines, f"{command}: expected {case.message!r} in:\n{out}"
        assert "error:" in out, out
    assert home_digest(home) == before


def fleet_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "fleet"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_console_script_prints_one_line_and_a_traceback_only_with_debug(trained, tmp_path):
    _, good = trained
    bad = fleet_with(good, tmp_path, "source: toy.csv", "source: d.jsonl")
    (tmp_path / "toy.csv").write_bytes((good.parent / "toy.csv").read_bytes())
    (tmp_path / "d.jsonl").write_text('{"text": "rain", "label": "weather"}\nnot json\n')
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "other-home")}
    done = fleet_command("run", "--fleet", str(bad), env=env)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert any("d.jsonl: line 2 is not valid JSON" in line for line in said), said
    assert len(said) <= 3, said  # the error and the problem, nothing of Prefect's
    debug = fleet_command("--debug", "validate", "--fleet", str(bad), env=env)
    assert debug.returncode == 2 and "Traceback" in debug.stdout + debug.stderr
