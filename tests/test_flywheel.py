"""The data flywheel's parts on their own: the ledger, the pool, the review queue and its Label Studio
exchange, the training split a retrain gets, CBPE and the label audit (``fleet.labeling``, ``fleet.metrics.cbpe``).
The whole loop with a trained champion, the teacher against real servers and the flows: tests/test_flywheel_loop.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from conftest import write_toy_fleet
from fleet.core.storage import LocalStore, StorageError
from fleet.kinds import load_fleet
from fleet.labeling import audit, ledger, pool, queue
from fleet.labeling.ledger import LabelEvent, LabelingError, row_id
from fleet.metrics import cbpe
from fleet.ops import traffic
from fleet.stages.curation import curate


@pytest.fixture
def toy(tmp_path):
    spec = load_fleet(write_toy_fleet(tmp_path / "fleet")).specialists["toy"]
    return spec, LocalStore(tmp_path / "store")


# ---------------------------------------------------------------------------------------------- ledger
def test_the_latest_human_decision_wins_over_the_teacher_and_every_label_says_who_and_when(toy):
    _, store = toy
    ledger.record(store, "toy", [LabelEvent("a", "text a", "food", "teacher", "zero-shot", confidence=0.8)])
    ledger.record(store, "toy", [LabelEvent("a", "text a", "weather", "human", "ana")])
    ledger.record(store, "toy", [LabelEvent("b", "text b", None, "skip", "ana")])
    cur = ledger.current(ledger.events(store, "toy")).set_index("id")
    assert cur.loc["a", "human"] == "weather" and cur.loc["a", "human_by"] == "ana" and cur.loc["a", "human_at"]
    assert cur.loc["a", "teacher"] == "food" and cur.loc["a", "teacher_confidence"] == 0.8
    assert cur.loc["b", "human_source"] == "skip" and pd.isna(cur.loc["b", "human"])
    with pytest.raises(ValueError, match="source"):
        LabelEvent("c", "t", "x", "oracle", "me")


def test_an_import_is_claimed_once(toy):
    _, store = toy
    assert ledger.claim_import(store, "toy", b"[1]", {})
    assert not ledger.claim_import(store, "toy", b"[1]", {})
    assert ledger.claim_import(store, "toy", b"[2]", {})


# ---------------------------------------------------------------------------------------------- pool
def test_the_pool_merges_traffic_and_ingests_curated_and_without_the_datasets_rows(toy):
    spec, store = toy
    ds = curate(spec, store)
    from fleet.data import versions

    test_text = versions.load_split(store, "toy", ds.version, "test")["text"].iloc[0]
    traffic.log_predictions(
        store, "toy", [{"text": "New rain in Bergen tonight", "label": "weather", "score": 0.9}], "1"
    )
    key, n = pool.ingest(
        store,
        "toy",
        ["Call me at alice@example.com about soup", "New rain in Bergen  tonight", test_text, "", "  "],
        "ingest:x.csv",
    )
    assert key and n == 3  # empty texts are not stored
    got = pool.build(spec, store, ds.version)
    texts = sorted(got.rows["text"])
    assert len(texts) == 2 and texts[1] == "New rain in Bergen tonight"  # one row for both copies
    assert "alice@example.com" not in texts[0] and texts[0].endswith("about soup")  # redacted by the curation rules
    assert test_text not in set(got.rows["text"]) and got.set_aside.get("in-dataset") == 1
    assert got.rows["id"].tolist() == [row_id(t) for t in got.rows["text"]]
    assert got.read == 4


def test_the_pool_reads_only_the_parts_that_arrived_since_and_starts_over_when_one_is_gone(toy, monkeypatch):
    spec, store = toy
    ds = curate(spec, store)
    reads: list[str] = []
    real_get = store.get_bytes
    monkeypatch.setattr(
        store,
        "get_bytes",
        lambda key: (
            (reads.append(key) if key.startswith(("traffic/", "labeling/toy/ingest")) else None) or real_get(key)
        ),
    )

    def log(*texts: str) -> str:
        rows = [{"text": t, "label": "weather", "score": 0.9} for t in texts]
        key = traffic.log_predictions(store, "toy", rows, "1")
        assert key
        return key

    def from_scratch():
        for k in store.list("labeling/toy/pool-index"):
            store.delete(k)
        return pool.build(spec, store, ds.version)

    first = log("Snow in Oslo by morning", "Hail over Tromso at noon")
    a = pool.build(spec, store, ds.version)
    assert sorted(a.rows["text"]) == ["Hail over Tromso at noon", "Snow in Oslo by morning"] and reads == [first]
    reads.clear()
    assert pool.build(spec, store, ds.version).rows.equals(a.rows) and reads == []  # nothing new: nothing read
    second = log("Fog on the fjord tonight", "Snow in Oslo by morning")  # one new text, one seen before
    b = pool.build(spec, store, ds.version)
    assert reads == [second] and len(b.rows) == 3 and b.read == 4 and b.set_aside.get("duplicate") == 1
    again = from_scratch()
    assert again.rows.equals(b.rows) and (again.read, again.set_aside) == (b.read, b.set_aside)
    store.delete(first)  # log retention took the first part: the pool forgets what only it held
    c = pool.build(spec, store, ds.version)
    assert sorted(c.rows["text"]) == ["Fog on the fjord tonight", "Snow in Oslo by morning"]
    (index_key,) = store.list("labeling/toy/pool-index")
    store.put_bytes(index_key, b"{not json")  # a broken index is rebuilt, not trusted
    assert pool.build(spec, store, ds.version).rows.equals(c.rows)
    assert pool._index_key(spec, ds.version) != pool._index_key(spec, "another-dataset")


def test_a_broken_part_is_refused_naming_it_and_its_line_and_the_index_is_left_as_it_was(toy):
    spec, store = toy
    ds = curate(spec, store)
    traffic.log_predictions(store, "toy", [{"text": "Snow in Oslo by morning", "label": "weather"}], "1")
    before = pool.build(spec, store, ds.version)
    (index_key,) = store.list("labeling/toy/pool-index")
    index = store.get_bytes(index_key)
    for bad, says in [
        (b'{"text": "ok"}\n{"text": ', "line 2 is not valid JSON"),
        (b"[1, 2]\n", "line 1 is not a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
    ]:
        key = "labeling/toy/ingest/broken.jsonl"
        store.put_bytes(key, bad)
        with pytest.raises(StorageError, match=f"{key}.*{says}"):
            pool.build(spec, store, ds.version)
        assert store.get_bytes(index_key) == index
    store.delete(key)
    assert pool.build(spec, store, ds.version).rows.equals(before.rows)


def test_the_monitor_reading_a_window_refuses_a_broken_log_part_by_name(toy):
    _, store = toy
    now = datetime.now(UTC)
    traffic.log_predictions(store, "toy", [{"text": "Snow in Oslo", "label": "weather"}], "1", when=now)
    assert list(traffic.read_window(store, "traffic", "toy", now=now)["text"]) == ["Snow in Oslo"]
    key = f"traffic/toy/date={now:%Y-%m-%d}/part-broken.jsonl"
    store.put_bytes(key, b'{"text": "ok", "time": "x"}\n{"text": ')
    with pytest.raises(StorageError, match=f"{key}: line 2 is not valid JSON"):
        traffic.read_window(store, "traffic", "toy", now=now)


# ---------------------------------------------------------------------------------------------- queue
def _answers(rows: list[tuple[str, str, list[float]]]) -> pd.DataFrame:
    probs = [p for _, _, p in rows]
    return pd.DataFrame(
        {
            "id": [i for i, _, _ in rows],
            "specialist": [s for _, s, _ in rows],
            "specialist_confidence": [max(p) for p in probs],
            "uncertainty": queue.uncertainty(probs, len(rows)),
        }
    )


def test_the_queue_puts_uncertain_and_disputed_rows_first_and_drops_decided_ones():
    pool_rows = pd.DataFrame({"id": list("abcdefg"), "text": [f"t{i}" for i in "abcdefg"]})
    answers = _answers(
        [
            ("a", "food", [0.99, 0.01]),  # sure, teacher agrees
            ("b", "food", [0.55, 0.45]),  # unsure
            ("c", "food", [0.95, 0.05]),  # sure, but the teacher says otherwise with 0.9
            ("d", "food", [0.5, 0.5]),  # unsure, but a human already labelled it
            ("e", "food", [0.97, 0.03]),
            ("f", "food", [0.9, 0.1]),  # f, g: reviewed, the teacher was right and the specialist not
            ("g", "food", [0.9, 0.1]),
        ]
    )
    events = [
        LabelEvent("a", "ta", "food", "teacher", "t", confidence=0.9),
        LabelEvent("c", "tc", "weather", "teacher", "t", confidence=0.9),
        LabelEvent("d", "td", "weather", "human", "ana"),
    ] + [
        e
        for r in "fg"
        for e in (
            LabelEvent(r, f"t{r}", "weather", "teacher", "t", confidence=0.9),
            LabelEvent(r, f"t{r}", "weather", "human", "ana"),
        )
    ]
    labels = ledger.current(pd.DataFrame([e.__dict__ for e in events]))
    flagged = pd.DataFrame(
        {"id": ["z"], "text": ["tz"], "given": ["food"], "suggested": ["weather"], "quality": [0.02]}
    )
    q = queue.rank(pool_rows, answers, labels, flagged)
    assert q["id"].tolist() == ["c", "b", "z", "e", "a"]  # 0.29+0.9, 0.99, 1-0.02, 0.19, 0.08
    assert not {"d", "f", "g"} & set(q["id"])
    assert "teacher says weather" in q.set_index("id").loc["c", "reason"]
    assert "label issue" in q.set_index("id").loc["z", "reason"]
    assert q["priority"].is_monotonic_decreasing


def test_a_teacher_counts_only_once_humans_side_with_it_over_the_specialist_beyond_chance():
    ids = ["a", "b", "c", "d", "e"]
    pool_rows = pd.DataFrame({"id": ids, "text": [f"t{i}" for i in ids]})
    answers = _answers([(i, "food", [0.9, 0.1]) for i in ids])

    def labels(*humans: str):  # the teacher says weather everywhere; humans label b, c, ... in this order
        events = [LabelEvent(i, f"t{i}", "weather", "teacher", "t", confidence=0.9) for i in ids]
        events += [LabelEvent(i, f"t{i}", lab, "human", "ana") for i, lab in zip(ids[1:], humans)]
        return ledger.current(pd.DataFrame([e.__dict__ for e in events]))

    assert queue.teacher_weight(answers, labels()) == 0.0  # nothing reviewed yet: not trusted
    assert queue.teacher_weight(answers, labels("weather")) == 0.0  # right once: could be chance
    assert queue.teacher_weight(answers, labels("weather", "weather")) == 1.0  # right each time, the specialist not
    assert queue.teacher_weight(answers, labels("food", "food")) == 0.0  # the specialist was right
    assert queue.teacher_weight(answers, labels("weather", "weather", "food", "food")) == 0.0  # even
    assert queue.teacher_weight(answers, labels("weather", "weather", "weather", "food")) == 0.0  # 3 of 4: not yet
    overruled = queue.rank(pool_rows, answers, labels("food", "food"))
    assert overruled.set_index("id").loc["a", "disagreement"] == 0.0
    trusted = queue.rank(pool_rows, answers, labels("weather", "weather"))
    assert trusted["id"].tolist()[0] == "a" and trusted.set_index("id").loc["a", "disagreement"] == 0.9


def test_the_first_batch_is_picked_for_variety_among_the_most_useful_rows():
    prize = [f"win a free prize call now {w}" for w in ("today", "tonight", "friend", "mate", "quick", "please")]
    other = [
        "meeting moved to friday",
        "parcel delayed at the depot",
        "refund for my broken kettle",
        "where is the nearest station",
        "dinner at mum's on sunday",
        "invoice attached for march",
    ]
    q = pd.DataFrame(
        {"id": [f"r{i}" for i in range(12)], "text": prize + other, "priority": np.linspace(1.0, 0.45, 12)}
    )
    out = queue.diversify(q, 3, factor=4)
    first = out.head(3)
    assert first["text"].isin(prize).sum() == 1  # one of the six near-twins, not three
    assert first["priority"].is_monotonic_decreasing  # the batch keeps the queue's order
    assert sorted(out["id"]) == sorted(q["id"])  # nothing lost or doubled
    rest = out["id"].tolist()[3:]
    assert rest == [i for i in q["id"] if i in set(rest)]  # the others keep their order
    assert queue.diversify(q.head(3), 3)["id"].tolist() == ["r0", "r1", "r2"]  # too few to choose from
    blank = q.assign(text="")
    assert queue.diversify(blank, 3)["id"].tolist() == q["id"].tolist()  # no words: the ranking stands


def _exported(toy_queue: pd.DataFrame) -> list[dict]:
    return queue.export_label_studio("toy", toy_queue, ["weather", "food"])


def _annotate(tasks: list[dict], answers: dict[int, str], who: str = "ana@example.com") -> bytes:
    done = []
    for i, t in enumerate(tasks):
        t = dict(t, id=100 + i)
        if i in answers:
            t["annotations"] = [
                {
                    "completed_by": {"id": 1, "email": who},
                    "created_at": "2026-12-07T10:00:00Z",
                    "result": [
                        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [answers[i]]}}
                    ],
                }
            ]
        done.append(t)
    return json.dumps(done).encode()


@pytest.fixture
def toy_queue():
    return pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["ta", "tb", "tc"],
            "priority": [1.5, 1.0, 0.5],
            "specialist": ["food", "food", "weather"],
            "specialist_confidence": [0.6, 0.7, 0.8],
            "teacher": ["weather", None, "weather"],
            "teacher_confidence": [0.9, np.nan, 0.7],
            "reason": ["r", "r", "r"],
        }
    )


def test_label_studio_tasks_carry_the_teachers_guess_and_come_back_as_human_labels(toy_queue):
    tasks = _exported(toy_queue)
    assert [t["data"]["fleet_id"] for t in tasks] == ["a", "b", "c"]
    pre = tasks[0]["predictions"][0]
    assert pre["model_version"] == "teacher" and pre["result"][0]["value"] == {"choices": ["weather"]}
    assert tasks[1]["predictions"][0]["model_version"] == "specialist"
    assert '<Choice value="weather"/>' in queue.label_config(["weather", "food"])
    known = {"a": "ta", "b": "tb", "c": "tc"}
    got = queue.import_label_studio(
        "toy",
        _annotate(tasks, {0: "weather", 1: "food"}),
        "x.json",
        ["weather", "food"],
        known,
        {"b": ("food", "2026-12-01T00:00:00+00:00")},
    )
    assert [(e.id, e.label, e.source, e.by) for e in got.events] == [
        ("a", "weather", "human", "label-studio:ana@example.com")
    ]
    assert got.unchanged == 1 and got.unannotated == 1
    assert got.events[0].at == "2026-12-07T10:00:00Z"
    # an older export imported late does not undo a decision made after its annotation
    later = {"a": ("food", "2026-12-07T11:00:00+00:00"), "b": ("weather", "2026-12-01T00:00:00+00:00")}
    again = queue.import_label_studio(
        "toy", _annotate(tasks, {0: "weather", 1: "food"}), "x.json", ["weather", "food"], known, later
    )
    assert got.stale == 0 and again.stale == 1 and [(e.id, e.label) for e in again.events] == [("b", "food")]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ts: ts[1]["data"].update(fleet_id="nope"), r"task 2 \(fleet_id nope\): unknown id"),
        (lambda ts: ts[0]["data"].update(specialist="other"), r"task 1 .*belongs to specialist 'other', not toy"),
        (
            lambda ts: ts[2]["annotations"][0]["result"][0]["value"].update(choices=["sport"]),
            r"task 3 .*label 'sport' is not one of weather, food",
        ),
        (lambda ts: ts[0].pop("data"), r"task 1: has no data.fleet_id"),
        (lambda ts: ts[0]["data"].update(fleet_id=["a", "b"]), r"task 1: has no data.fleet_id string"),
    ],
)
def test_a_wrong_import_is_refused_whole_naming_the_row(toy_queue, mutate, message):
    tasks = json.loads(_annotate(_exported(toy_queue), {0: "weather", 1: "food", 2: "food"}))
    mutate(tasks)
    with pytest.raises(LabelingError, match=message):
        queue.import_label_studio(
            "toy", json.dumps(tasks).encode(), "x.json", ["weather", "food"], {"a": "", "b": "", "c": ""}, {}
        )


def test_an_import_that_is_not_json_is_refused():
    with pytest.raises(LabelingError, match=r"x\.json: not a JSON file"):
        queue.import_label_studio("toy", b"{nope", "x.json", ["a", "b"], {}, {})
    with pytest.raises(LabelingError, match="a list of tasks"):
        queue.import_label_studio("toy", b'{"a": 1}', "x.json", ["a", "b"], {}, {})


# ---------------------------------------------------------------------------------------------- retrain data
def test_reviewed_rows_join_the_training_split_only_and_the_cards_count_their_sources(toy):
    spec, store = toy
    from fleet.data import versions
    from fleet.stages.curation import LABEL_SOURCE

    plain = curate(spec, store)
    test = versions.load_split(store, "toy", plain.version, "test")
    train = versions.load_split(store, "toy", plain.version, "train")
    relabel = train.iloc[0]
    flipped = "food" if relabel["label"] == "weather" else "weather"
    reviewed = pd.DataFrame(
        [
            ("Hail storm over Bergen this evening", "weather", "teacher", "zero-shot", "2026-12-07T01:00:00"),
            ("We grilled fish in Bergen", "food", "human", "ana", "2026-12-07T02:00:00"),
            (relabel["text"], flipped, "human", "ana", "2026-12-07T03:00:00"),  # a human fixes a training label
            (test["text"].iloc[0], "food", "teacher", "zero-shot", "2026-12-07T04:00:00"),  # would leak
        ],
        columns=["text", "label", *LABEL_SOURCE],
    )
    ds = curate(spec, store, reviewed=reviewed)
    assert ds.version != plain.version
    for split in ("validation", "test"):  # the evaluation's splits are untouched
        assert (
            versions.load_split(store, "toy", ds.version, split)["text"].tolist()
            == versions.load_split(store, "toy", plain.version, split)["text"].tolist()
        )
    new_train = versions.load_split(store, "toy", ds.version, "train").set_index("text")
    assert len(new_train) == len(train) + 2
    assert new_train.loc["We grilled fish in Bergen", "label_source"] == "human"
    assert new_train.loc["We grilled fish in Bergen", "labeled_by"] == "ana"
    assert new_train.loc[relabel["text"], "label"] == flipped
    assert ds.label_sources == {"human": 2, "original": len(train) - 1, "teacher": 1}
    assert ds.quarantined.get("leakage") == 1 and ds.changed.get("relabelled") == 1
    card = versions.load_card(store, "toy", ds.version)
    assert "Training rows by who labelled them: human 2" in card
    assert plain.label_sources == {"original": len(train)}


# ---------------------------------------------------------------------------------------------- CBPE
def test_cbpe_estimates_macro_f1_from_calibrated_confidences():
    rng = np.random.default_rng(0)

    def sample(n: int, shift: float):
        x = rng.normal(shift, 1.5, n)  # inputs move; how labels follow from inputs does not (covariate shift)
        y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
        p1 = 1 / (1 + np.exp(-6 * x))  # overconfident: calibration has to fix it
        return y, np.column_stack([1 - p1, p1])

    y_cal, p_cal = sample(4000, -0.5)
    cal = cbpe.Calibrator.fit(p_cal, y_cal)
    errors = []
    for shift in (-0.5, -1.5, 0.0, 1.0):
        y, p = sample(3000, shift)
        true = cbpe.true_macro_f1(y, p.argmax(axis=1), 2)
        errors.append(abs(cbpe.estimate_macro_f1(cal, p) - true))
    assert max(errors) < 0.03, errors
    raw = cbpe.Calibrator([(np.array([0.0, 1.0]), np.array([0.0, 1.0]))] * 2)  # no calibration: too optimistic
    y, p = sample(3000, -0.5)
    assert cbpe.estimate_macro_f1(raw, p) > cbpe.true_macro_f1(y, p.argmax(axis=1), 2) + 0.03


def test_under_label_shift_the_window_priors_are_estimated_first():
    rng = np.random.default_rng(2)

    def sample(n: int, prior: float):  # the label mix moves; how inputs look given the label does not
        y = (rng.random(n) < prior).astype(int)
        x = np.where(y == 1, 0.8, -0.8) + rng.normal(0, 1.0, n)
        p1 = 1 / (1 + np.exp(-2.5 * x))
        return y, np.column_stack([1 - p1, p1])

    y_cal, p_cal = sample(4000, 0.2)
    cal = cbpe.Calibrator.fit(p_cal, y_cal)
    assert cal.prior is not None and abs(cal.prior[1] - 0.2) < 0.02
    for prior in (0.2, 0.6, 0.85):
        y, p = sample(3000, prior)
        true = cbpe.true_macro_f1(y, p.argmax(axis=1), 2)
        adjusted = cbpe.estimate_macro_f1(cal, p, "label-shift")
        assert abs(adjusted - true) < 0.03, (prior, adjusted, true)
    plain = cbpe.estimate_macro_f1(cal, p, "covariate-shift")  # the last, most shifted window
    assert abs(plain - true) > abs(adjusted - true) + 0.01
    with pytest.raises(ValueError, match="assumes"):
        cbpe.estimate_macro_f1(cal, p, "concept-shift")


# ---------------------------------------------------------------------------------------------- audit
def test_the_audit_finds_flipped_labels_from_out_of_fold_predictions():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    y = rng.integers(0, 3, 600)
    centers = rng.normal(0, 1, (3, 16)) * 2.5
    emb = centers[y] + rng.normal(0, 1, (600, 16))
    labels = [classes[i] for i in y]
    flipped = rng.choice(600, 30, replace=False)
    for i in flipped:
        labels[i] = classes[(y[i] + 1) % 3]
    texts = [f"row {i}" for i in range(600)]
    probs = audit.out_of_fold_probabilities(audit.features(texts, emb), labels, classes)
    found = audit.find_issues(texts, labels, classes, probs)
    hit = {int(t.split()[1]) for t in found["text"]}
    precision, recall = len(hit & set(flipped)) / len(hit), len(hit & set(flipped)) / len(flipped)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    assert found["quality"].is_monotonic_increasing
    assert all(found["suggested"] != found["given"])


# ---------------------------------------------------------------------------------------------- commands
def _cli(*args: str):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_commands_say_clearly_what_is_missing(tmp_path, fleet_home):
    fleet_file = str(write_toy_fleet(tmp_path / "f"))
    code, out = _cli("review", "toy", "--fleet", fleet_file)
    assert code == 2 and "toy: no champion yet; run `fleet run --only toy` first" in out, out
    code, out = _cli("audit", "toy", "--fleet", fleet_file)
    assert code == 2 and "no champion yet" in out
    code, out = _cli("review", "toy", "--import", str(tmp_path / "missing.json"), "--fleet", fleet_file)
    assert code == 2 and "missing.json: no such file" in out
    code, out = _cli("review", "nobody", "--fleet", fleet_file)
    assert code == 2 and "nobody" in out and "Traceback" not in out
    (tmp_path / "u.csv").write_text("message\nhello there\n")
    code, out = _cli("ingest", "toy", str(tmp_path / "u.csv"), "--fleet", fleet_file)
    # names the missing column and the setting; the file's own first line ("message") is never printed
    assert code == 2 and "text" in out and "message" not in out and "not shown" in out, out
    code, out = _cli("ingest", "toy", str(tmp_path / "u.csv"), "--text-column", "message", "--fleet", fleet_file)
    assert code == 0 and "1 row(s) stored" in out


def test_the_drift_report_shows_the_estimate_when_there_is_one():
    from fleet.metrics.drift import Signal
    from fleet.ops.monitoring import DriftReport, report_markdown

    report = DriftReport(id="r1", specialist="toy", champion_version="1", window_hours=24, window_rows=80)
    assert "Estimated macro-F1" not in report_markdown(report)  # a generative specialist's report has none
    report.signals["estimated_performance"] = Signal(
        test="CBPE estimated macro-F1",
        statistic=0.71,
        p_value=0.0,
        threshold=0.8,
        fired=True,
        details={"reference_macro_f1": 0.9, "min_estimated_score": 0.8, "assumes": "label-shift"},
    )
    md = report_markdown(report)
    assert "Estimated macro-F1 without labels" in md and "**0.710** (on its test split: 0.900); alarm below 0.8" in md
