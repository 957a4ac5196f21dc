"""Never score the same thing twice: a contender's score on a test split is stored under (its identity, the
split's rows, the scoring code) and reused; any of the three changed, it is scored again."""

from __future__ import annotations

import pandas as pd

from conftest import write_toy_fleet
from fleet.core.storage import LocalStore
from fleet.kinds import load_fleet
from fleet.stages import evaluation, score_cache


def test_an_unchanged_baseline_is_not_run_again_and_a_changed_split_is(tmp_path, monkeypatch):
    spec = load_fleet(write_toy_fleet(tmp_path)).specialists["toy"]
    rows = pd.read_csv(tmp_path / "toy.csv")
    test, train = rows.iloc[::4].reset_index(drop=True), rows.drop(rows.index[::4]).reset_index(drop=True)
    store = LocalStore(tmp_path / "store")
    calls: list[str] = []
    real = evaluation.contender

    def counted(kind, spec, role, predictor, frame):
        calls.append(predictor.name)
        return real(kind, spec, role, predictor, frame)

    monkeypatch.setattr(evaluation, "contender", counted)
    first = evaluation.general(spec, test, None, train, store)
    assert calls == [b.model for b in first.baselines] and len(calls) == 1
    again = evaluation.general(spec, test, None, train, store)
    assert len(calls) == 1  # reused
    assert again.baselines[0].reused and not first.baselines[0].reused
    assert again.baselines[0].model_dump(exclude={"cost", "reused"}) == first.baselines[0].model_dump(
        exclude={"cost", "reused"}
    )
    assert again.baselines[0].cost == first.baselines[0].cost  # the measured cost comes with it
    assert len(list((tmp_path / "store" / "scores" / "toy").glob("*.json"))) == 1

    evaluation.general(spec, test.iloc[1:], None, train, store)  # another test split: scored
    assert len(calls) == 2
    no_store = evaluation.general(spec, test, None, train, None)  # nowhere to keep scores: always scored
    assert len(calls) == 3 and no_store.baselines[0].value("macro_f1") == first.baselines[0].value("macro_f1")


def test_the_key_changes_with_each_of_its_three_parts():
    a = pd.DataFrame({"text": ["x", "y"], "label": ["p", "q"]})
    b = a.assign(label=["p", "p"])
    assert score_cache.test_version(a) == score_cache.test_version(a.copy())
    assert score_cache.test_version(a) != score_cache.test_version(b)
    keys = {
        score_cache.key("m1", "t1", "s1"),
        score_cache.key("m2", "t1", "s1"),
        score_cache.key("m1", "t2", "s1"),
        score_cache.key("m1", "t1", "s2"),
    }
    assert len(keys) == 4
    assert score_cache.scoring_version("fleet.kinds.classification") != score_cache.scoring_version(
        "fleet.kinds.generation"
    )


def test_changed_evaluation_settings_score_again(tmp_path):
    spec = load_fleet(write_toy_fleet(tmp_path)).specialists["toy"]
    wider = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"confidence_level": 0.9})})
    module = "fleet.kinds.classification"
    assert score_cache.scoring_key(spec, module) == score_cache.scoring_key(spec.model_copy(), module)
    assert score_cache.scoring_key(spec, module) != score_cache.scoring_key(wider, module)
