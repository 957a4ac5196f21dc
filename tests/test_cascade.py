"""The cascade, the fallback client, SLAs and the monthly bill, on their own (fast): threshold choice and its
figures, calibration, the fallback down, slow, rate-limited, not JSON or off its label set (a real loopback
server: the simulated general model), merging answers, SLA breaches, and the TCO projection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from simulated_llm import SimulatedLLM

from fleet.core.results import DecisionRecord, Outputs
from fleet.core.sections import BaselineSpec, CascadeSpec
from fleet.core.spec import SpecError
from fleet.core.storage import LocalStore
from fleet.kinds import kind_of, parse_fleet
from fleet.metrics import cascade as cm
from fleet.models.openai_client import BaselineError, ChatClient
from fleet.ops import escalation, sla, tco, traffic

LABELS = ["ham", "spam"]


def _spec(extra: str = ""):
    import yaml

    doc = yaml.safe_load(f"""
specialists:
  sms:
    data: {{source: x.csv}}
    labels: {{ham: personal, spam: advert}}
{extra}""")
    return parse_fleet(doc).specialists["sms"]


def _with_fallback(url: str, more: str = "") -> str:
    return (
        f"    serving:\n      fallback: {{kind: openai-chat, url: '{url}', model: sim, "
        "price_per_1k_input_tokens: 0.0025, price_per_1k_output_tokens: 0.01}\n"
        "      timeout_s: 1.0\n      retries: 0\n" + more
    )


# ----------------------------------------------------------------------------------------- the threshold
def _rows(n: int = 400, seed: int = 0):
    """Confidence, the specialist's correctness (right when sure, a coin when not), a 0.97 fallback."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    specialist = (rng.uniform(size=n) < np.where(conf > 0.8, 0.99, 0.55)).astype(float)
    fallback = (rng.uniform(size=n) < 0.97).astype(float)
    return conf, specialist, fallback


def test_match_fallback_keeps_the_most_within_epsilon_of_the_fallback():
    conf, s, f = _rows()
    choice = cm.choose(conf, s, f, CascadeSpec(epsilon=0.01))
    kept = conf >= choice.raw_threshold
    quality = np.where(kept, s, f).mean()
    assert quality >= f.mean() - 0.01 - 1e-9
    assert 0.2 < choice.kept_share < 1.0  # escalates the unsure rows, keeps the sure ones
    # keeping one more row (the next confidence down) would break the target or keep no more
    lower = conf[conf < choice.raw_threshold]
    if len(lower):
        one_more = conf >= lower.max()
        assert np.where(one_more, s, f).mean() < f.mean() - 0.01 or one_more.mean() == choice.kept_share


def test_a_weaker_fallback_costs_the_specialist_nothing():
    conf, s, _ = _rows()
    weak = (np.random.default_rng(1).uniform(size=len(s)) < 0.5).astype(float)
    choice = cm.choose(conf, s, weak, CascadeSpec(epsilon=0.01))
    assert choice.kept_share == 1.0 and choice.raw_threshold == -cm.NEVER
    assert choice.quality == pytest.approx(s.mean())


def test_max_fallback_share_is_never_exceeded():
    conf, s, f = _rows()
    choice = cm.choose(conf, s, f, CascadeSpec(target="max-fallback-share", max_fallback_share=0.25))
    assert 1 - choice.kept_share <= 0.25 + 1e-9
    assert choice.quality >= s.mean()


def test_calibration_is_monotone_and_figures_carry_intervals():
    conf, s, f = _rows()
    cal = cm.calibrate(conf, s)
    mapped = cal(np.sort(conf))
    assert np.all(np.diff(mapped) >= -1e-12) and mapped.min() >= 0 and mapped.max() <= 1
    assert mapped[-1] > mapped[0]  # surer is righter
    fig = cm.figures(conf, s, f, 0.8, (0.01, 5.0), resamples=200)
    for m in (fig.kept_share, fig.cascade_quality, fig.specialist_quality, fig.fallback_quality):
        assert m.ci is not None and m.ci[0] <= m.value <= m.ci[1]
    kept = (conf >= 0.8).mean()
    assert fig.cost_per_1k["cascade"].value == pytest.approx(0.01 + (1 - kept) * 5.0, abs=1e-5)


# ----------------------------------------------------------------------------------------- the fleet file
def test_the_fleet_file_refuses_a_fallback_of_the_wrong_kind_and_escalate_all_without_one():
    with pytest.raises(SpecError, match=r"serving\.fallback: base-model cannot answer"):
        _spec("    serving:\n      fallback: {kind: base-model}\n")
    with pytest.raises(SpecError, match=r"escalate-all needs serving\.fallback"):
        _spec("    sla: {min_quality: 0.9, on_quality_breach: escalate-all}\n")
    with pytest.raises(SpecError, match="timeout_s"):
        _spec(_with_fallback("http://127.0.0.1:1/v1") + "      timeout_s: 0\n")


def test_a_registry_tag_that_is_not_a_finite_number_turns_the_cascade_off():
    assert escalation.threshold_of({"cascade.raw_threshold": "0.75"}) == 0.75
    for bad in ("nan", "inf", "x; rm -rf /", ""):
        assert escalation.threshold_of({"cascade.raw_threshold": bad}) is None
    assert escalation.threshold_of({}) is None


# ----------------------------------------------------------------------------------------- the fallback
def test_the_chat_client_over_a_real_loopback_server_and_each_way_it_fails():
    with SimulatedLLM({"hello": "ham"}, accuracy=1.0, labels=LABELS) as sim:
        spec = BaselineSpec(kind="openai-chat", url=sim.url, model="sim", timeout_s=1.0, max_retries=0)
        client = ChatClient(spec, "sim")
        assert client.complete([{"role": "user", "content": "hello"}]) == "ham"
        assert client.tokens_in > 0 and client.tokens_out > 0
        sim.mode = "rate-limited"
        with pytest.raises(BaselineError, match="HTTP 429"):
            client.complete([{"role": "user", "content": "hello"}])
        sim.mode = "garbage"
        with pytest.raises(BaselineError, match="did not answer JSON"):
            client.complete([{"role": "user", "content": "hello"}])
        sim.mode, sim.delay_s = "slow", 3.0
        with pytest.raises(BaselineError, match="gave no answer in 1 s"):
            client.complete([{"role": "user", "content": "hello"}])
    with pytest.raises(BaselineError, match="cannot reach"):
        client.complete([{"role": "user", "content": "hello"}])


def test_a_failing_fallback_is_reported_never_raised_and_the_specialist_answer_is_served_marked():
    texts = ["win a prize now", "see you at dinner"]
    with SimulatedLLM(dict.fromkeys(texts, "spam"), accuracy=1.0, labels=LABELS) as sim:
        spec = _spec(_with_fallback(sim.url))
        kind = kind_of(spec)
        mine = Outputs(predictions=["ham", "ham"], probabilities=[[0.55, 0.45], [0.99, 0.01]])
        assert escalation.to_escalate(kind, spec, mine, 0.9, False) == [0]
        assert escalation.to_escalate(kind, spec, mine, None, True) == [0, 1]  # escalate-all
        fb = escalation.Fallback(spec)
        try:
            asked = fb.ask([texts[0]])
            routed = escalation.merge(mine, [0], asked)
            assert routed.answered_by == ["fallback", "specialist"] and routed.outputs.predictions == ["spam", "ham"]
            assert routed.cost > 0 and routed.errors == [None, None]
            rows = escalation.traffic_fields(routed, kind, texts)
            assert rows[0]["fallback_answer"] == "spam" and "fallback_answer" not in rows[1]
            for mode in ("rate-limited", "garbage", "off-label", "slow"):
                sim.mode, sim.delay_s = mode, 2.0
                asked = fb.ask([texts[0]])
                routed = escalation.merge(mine, [0], asked)
                assert routed.answered_by == ["specialist", "specialist"], mode
                assert routed.outputs.predictions == ["ham", "ham"] and routed.errors[0], mode
                assert "fallback_answer" not in escalation.traffic_fields(routed, kind, texts)[0], mode
        finally:
            fb.close()
    fb = escalation.Fallback(spec)  # the server is gone
    try:
        routed = escalation.merge(mine, [0], fb.ask([texts[0]]))
        assert routed.answered_by[0] == "specialist" and "cannot reach" in (routed.errors[0] or "")
    finally:
        fb.close()


# ----------------------------------------------------------------------------------------- SLAs
def test_sla_breaches_name_the_figure_and_escalate_all_lasts_while_that_champion_serves(tmp_path):
    spec = _spec(
        _with_fallback("http://127.0.0.1:9/v1")
        + "    sla: {p95_ms: 50, max_error_rate: 0.05, min_quality: 0.9, on_quality_breach: escalate-all}\n"
    )
    window = pd.DataFrame(
        {
            "request": [f"r{i}" for i in range(40)],
            "latency_ms": [20.0] * 30 + [300.0] * 10,
            "fallback_error": [None] * 38 + ["down", "down"],
        }
    )
    report = sla.measure(spec, "3", window, refused=2, estimate=0.8, feedback=None)
    assert report.p95_ms == pytest.approx(300.0) and report.error_rate == pytest.approx(4 / 42, abs=1e-6)
    assert len(report.breaches) == 3 and report.escalate_all and report.quality_source == "estimated"
    store = LocalStore(tmp_path / "store")
    sla.record(store, report)
    assert sla.escalating(store, "sms", "3") and not sla.escalating(store, "sms", "4")  # a new champion ends it
    fine = sla.measure(spec, "3", window.assign(latency_ms=10.0, fallback_error=None), 0, None, (95, 100))
    assert fine.breaches == [] and fine.quality_source == "reviewed"
    assert "cannot be met" in (sla.unattainable(spec, 80.0, "3") or "")
    assert sla.unattainable(spec, 20.0, "3") is None
    sla.log_errors(store, {"sms": 3})
    assert sla.errors_in(store, "sms", 1.0) == 3


# ----------------------------------------------------------------------------------------- the bill
def test_the_monthly_bill_and_its_projection_with_falling_api_prices(tmp_path):
    from datetime import UTC, datetime

    spec = _spec(_with_fallback("http://127.0.0.1:9/v1"))
    store = LocalStore(tmp_path / "store")
    now = datetime.now(UTC)
    month = now.strftime("%Y-%m")
    rows = [{"text": f"t{i}", "label": "ham", "answered_by": "specialist"} for i in range(90)]
    rows += [{"text": f"e{i}", "label": "ham", "answered_by": "fallback", "fallback_cost": 0.002} for i in range(10)]
    traffic.log_predictions(store, "sms", rows, "1", when=now)
    run = tco.TrainingRun(at=now, seconds=3600.0, device="cpu", threads=2)
    b = tco.bill(spec, store, month, [run], None)
    assert b.requests == 100 and b.escalated == 10
    assert b.costs["fallback"] == pytest.approx(0.02) and b.costs["training"] == pytest.approx(0.08)
    assert b.fallback_per_request == pytest.approx(0.002) and b.all_fallback == pytest.approx(0.2)
    p = tco.project(b, spec, requests_per_month=1_000_000, months=24)
    assert p is not None and p.fallback_monthly[12] == pytest.approx(p.fallback_monthly[0] * 0.1, rel=1e-3)
    assert p.break_even_month == 1  # 10% escalated: the fleet is cheaper from the start
    assert "break-even" in tco.markdown([b], [p], "test") and tco.figure([p])[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="YYYY-MM"):
        tco.month_bounds("2026-13")


def test_a_decision_record_without_a_cascade_still_reads():
    record = DecisionRecord.model_validate(
        {
            "specialist": "sms",
            "task": "text-classification",
            "dataset_version": "d",
            "trigger": "manual",
            "decided_at": "now",
            "metric": "macro_f1",
            "verdict": "promote",
            "promote": True,
            "reasons": [],
            "thresholds": {},
            "contenders": {},
            "baselines": [],
            "paired_tests": {},
        }
    )
    assert record.cascade is None


def test_a_text_with_unicode_line_separators_keeps_the_traffic_log_readable(tmp_path):
    """A served text may hold U+2028, U+0085 or a form feed: JSON keeps them inside a string on one line, and
    every log reader splits on newlines only (str.splitlines broke such a line in two: a tweet corpus did)."""
    store = LocalStore(tmp_path / "store")
    odd = "first\u2028second\x85third\x0cfourth\x1cfifth"
    key = traffic.log_predictions(store, "sms", [{"text": odd, "label": "ham"}, {"text": "plain", "label": "ham"}], "1")
    assert key is not None
    rows = traffic.read_part(store, key)
    assert [r["label"] for r in rows] == ["ham", "ham"] and "second" in rows[0]["text"]


def test_timed_answers_keep_every_per_row_field_in_the_rows_order():
    """The evaluation's timing reorders answers (singles, timed batches, the rest by length): a generative
    answer's confidence must come back with its row, or the cascade would read zeros (it did)."""
    from fleet.core.sections import EvaluationSpec
    from fleet.metrics.timing import measure

    texts = [f"text {'x' * (i % 7)} {i}" for i in range(30)]

    def predict(batch: list[str]) -> Outputs:
        ids = [int(t.rsplit(" ", 1)[1]) for t in batch]
        return Outputs(predictions=[str(i) for i in ids], tokens=ids, confidence=[-i / 100 for i in ids])

    out, _ = measure(predict, texts, EvaluationSpec(latency_samples=3, timing_rows=10, serving_batch_size=4))
    assert out.predictions == [str(i) for i in range(30)]
    assert out.tokens == list(range(30)) and out.confidence == [-i / 100 for i in range(30)]
