"""The fleet file: defaults, overrides, and one clear message per problem."""

import textwrap

import pytest

from conftest import DEMO_FLEET
from fleet.core.spec import DataSpec, SpecError
from fleet.kinds import load_fleet, parse_fleet

BASE = {
    "defaults": {"train": {"epochs": 1, "lora": {"r": 8}}, "gate": {"min_gain_over_baseline": 0.1}},
    "specialists": {
        "sms-spam": {"data": {"source": "x.csv"}, "labels": ["ham", "spam"]},
        "tickets": {"data": {"source": "y.csv"}, "labels": {"a": "about A", "b": ""}, "train": {"lora": {"r": 4}}},
    },
}


def problems(raw) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_fleet(raw, "fleet.yaml")
    return exc.value.problems


def test_defaults_and_overrides_merge_deeply():
    fleet = parse_fleet(BASE)
    spam, tickets = fleet.specialists["sms-spam"], fleet.specialists["tickets"]
    assert spam.train.lora.r == 8 and tickets.train.lora.r == 4
    assert tickets.train.epochs == 1  # from defaults, though tickets overrides another train field
    assert tickets.train.lora.alpha == 16  # model default
    assert spam.gate.min_gain_over_baseline == 0.1
    assert spam.labels == {"ham": "ham", "spam": "spam"}
    assert tickets.labels == {"a": "about A", "b": "b"}  # an empty description falls back to the label


def test_each_problem_names_specialist_and_field():
    raw = {
        "specialists": {
            "sms-spam": {"data": {"source": "x.csv"}, "labels": ["ham", "spam"], "train": {"lora": {"r": 0}}},
            "other": {"data": {"source": "y.csv", "colour": "red"}, "labels": ["a"], "task": "translation"},
        }
    }
    got = problems(raw)
    assert "specialists.sms-spam.train.lora.r: must be > 0" in got
    assert "specialists.other.data.colour: unknown field" in got
    assert "specialists.other.labels: needs at least two labels" in got
    assert any(p.startswith("specialists.other.task: must be one of") for p in got)
    assert len(got) == 4


def test_missing_fields_and_headerless_without_names():
    got = problems({"specialists": {"s": {"data": {"source": "a.tsv", "header": False}}}})
    assert "specialists.s.labels: required field is missing" in got
    assert "specialists.s.data.names: required when header is false" in got


def test_bad_names_and_top_level():
    assert problems({"specialists": {}}) == ["specialists: must be a non-empty mapping of name -> settings"]
    got = problems({"specialist": {}, "specialists": {"Bad Name": {"data": {"source": "a"}, "labels": ["x", "y"]}}})
    assert any(p.startswith("specialist: unknown top-level field") for p in got)
    assert any(p.startswith("specialists.Bad Name.name: must be lowercase") for p in got)


def test_a_wrong_default_is_reported_for_each_specialist():
    raw = {**BASE, "defaults": {"train": {"learning_rate": -1}}}
    got = problems(raw)
    assert got == [
        "specialists.sms-spam.train.learning_rate: must be > 0",
        "specialists.tickets.train.learning_rate: must be > 0",
    ]


def test_select_refuses_unknown_names():
    fleet = parse_fleet(BASE)
    assert [s.name for s in fleet.select(["tickets"])] == ["tickets"]
    with pytest.raises(SpecError, match="--only nope: no such specialist"):
        fleet.select(["nope"])


def test_load_fleet_file_errors_and_relative_sources(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_fleet(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("specialists: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_fleet(bad)
    good = tmp_path / "sub" / "fleet.yaml"
    good.parent.mkdir()
    good.write_text(
        textwrap.dedent("""
        specialists:
          s:
            data: {source: data/x.csv}
            labels: [a, b]
    """)
    )
    spec = load_fleet(good).specialists["s"]
    assert spec.data.source == str(tmp_path / "sub" / "data" / "x.csv")


def test_demo_fleet_file_is_valid():
    fleet = load_fleet(DEMO_FLEET)
    assert set(fleet.specialists) == {"sms-spam", "support-sentiment", "invoice-extractor"}


def _fleet_reading(source) -> dict:
    return {"specialists": {"s": {"data": {"source": str(source)}, "labels": ["ham", "spam"]}}}


def test_data_roots_keep_local_sources_inside_them(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "ok.csv").write_text("text,label\nhi,ham\n")
    (outside / "secret.csv").write_text("text,label\nno,ham\n")
    (root / "link.csv").symlink_to(outside / "secret.csv")  # inside by name, outside once resolved
    spec = parse_fleet(_fleet_reading(root / "ok.csv"), data_roots=[root]).specialists["s"]
    assert spec.data.source == str((root / "ok.csv").resolve())
    for bad in (outside / "secret.csv", root / "link.csv", root / ".." / "elsewhere" / "secret.csv"):
        with pytest.raises(SpecError, match="outside the data roots this fleet may read"):
            parse_fleet(_fleet_reading(bad), data_roots=[root])
    assert parse_fleet(_fleet_reading(outside / "secret.csv")).specialists["s"]  # no roots: a fleet of one's own
    pkg = parse_fleet(_fleet_reading("package://x/y.csv"), data_roots=[root]).specialists["s"]
    assert pkg.data.source == "package://x/y.csv"  # packaged and remote sources are not local paths


def test_a_missing_column_error_does_not_print_a_files_first_line(tmp_path):
    """A source that is not a data file (here a stand-in for a password-hash file) has no header: its first
    line is not echoed as "columns"."""
    from fleet.data.sources import CurationError, load_raw

    secret = tmp_path / "shadow"
    secret.write_text("root:$6$Zb1nF4kE$hAsHhAsHhAsH:19000:0:99999:7:::\n")
    with pytest.raises(CurationError) as err:
        load_raw(DataSpec(source=str(secret), format="csv"))
    assert "hAsH" not in str(err.value) and "$6$" not in str(err.value) and "not shown" in str(err.value)
