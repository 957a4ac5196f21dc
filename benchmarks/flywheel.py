"""The data flywheel on the demo's two classifiers: how few human labels, how good a student, how close an
estimate without labels, how well label issues are found. Writes benchmarks/results/flywheel.json.

Each classifier's data is curated as `fleet run` curates it (a temporary store). Its training split plays
the unlabelled traffic and its gold labels the human reviewer; the test split is the gold judge. Measured:

- ``labels_to_95pct``: human labels needed before the specialist reaches 95% of the macro-F1 it gets from
  the whole training split, labelling in the review queue's order (``active``: ``fleet.labeling.queue.rank``,
  the specialist's uncertainty plus the teacher's disagreement, 20 labels a round) and in ``random`` order,
  each the median of 3 seeds (the first 20 labels are the same random rows for both). The specialist here is
  the first stage of the fleet's LP-FT training, a linear probe (logistic regression) on the base encoder's
  frozen embeddings: it is retrained after every round, which a LoRA fine-tune per round (about 100 s here)
  would make a matter of hours on 2 cores.
- ``student_vs_teacher``: the teacher is the best of the specialist's general contenders on the gold test
  split (the demo names `embedding-zero-shot`); it labels the training split, the rows at or above
  ``labeling.min_confidence`` train a real specialist (the fleet's LoRA fine-tune), and both are scored on the
  gold test split as the evaluation scores contenders (macro-F1 with 95% intervals, measured cost per 1,000).
- ``cbpe``: the specialist fine-tuned on the gold labels is calibrated on its test split (as its reference
  profile is), then answers traffic windows of 200 rows drawn from the source rows the dataset never used
  (held-out traffic with gold labels): unshifted, prior-shifted (the rarest label made 80%, as the drift
  benchmark and `fleet simulate --shift prior` make it) and covariate-shifted (only short, or only long,
  texts). Reported: the mean absolute error of CBPE's estimated macro-F1 against the true one, and whether it
  alarms (estimate below the reference macro-F1 minus 0.05) on every window whose true score dropped by 0.10.
  Domain-shifted windows (another specialist's texts) have no gold labels in this label set and are left out.
- ``label_issues``: 5% of the training labels flipped at random; `fleet audit`'s functions (cleanlab's
  ``find_label_issues`` on 5-fold out-of-fold probabilities of the linear probe) flag rows; precision and
  recall against the flipped rows (rows with an original label error count against precision).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUND = 20  # labels per review round
ALARM_MARGIN = 0.05  # the benchmark's min_estimated_score: the reference macro-F1 less this


def probe_f1(train_x, train_y, test_x, test_y, k: int) -> float:
    from sklearn.linear_model import LogisticRegression

    from fleet.metrics.cbpe import true_macro_f1

    if len(set(train_y)) < 2:
        return true_macro_f1(test_y, np.full(len(test_y), train_y[0]), k)
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(train_x, train_y)
    return true_macro_f1(test_y, probe.predict(test_x), k)


def _probe_probs(x_lab, y_lab, x_all, k: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x_lab, y_lab)
    out = np.zeros((len(x_all), k))
    out[:, probe.classes_] = probe.predict_proba(x_all)
    return out


def _active_next(labelled: list[int], x, y, teacher_probs: np.ndarray, k: int) -> list[int]:
    """The review queue's next round: ``fleet.labeling.queue.rank`` over the unlabelled rows (``y``: the gold
    labels, of which only the ``labelled`` rows' are read)."""
    from fleet.labeling import ledger, queue

    rest = np.setdiff1d(np.arange(len(x)), labelled)
    y_lab = y[labelled]
    probs = _probe_probs(x[labelled], y_lab, x[rest], k) if len(set(y_lab)) > 1 else teacher_probs[rest]
    ids = [str(i) for i in rest]
    answers = pd.DataFrame(
        {
            "id": ids,
            "specialist": [str(c) for c in probs.argmax(1)],
            "specialist_confidence": probs.max(1),
            "uncertainty": queue.uncertainty(probs.tolist(), len(rest)),
        }
    )
    events = pd.DataFrame(
        {
            "id": ids,
            "text": ids,
            "label": [str(c) for c in teacher_probs[rest].argmax(1)],
            "source": "teacher",
            "by": "teacher",
            "at": "",
            "confidence": teacher_probs[rest].max(1),
            "batch": "",
        }
    )
    ranked = queue.rank(pd.DataFrame({"id": ids, "text": ids}), answers, ledger.current(events))
    return [int(i) for i in ranked["id"].head(ROUND)]


def labels_needed(x, y, test_x, test_y, teacher_probs, k: int, seed: int, target: float, order: str) -> int:
    """Human labels before the probe reaches ``target`` macro-F1, labelling ``order``-wise in rounds."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x)).tolist()
    labelled = perm[:ROUND]
    while len(labelled) < len(x):
        if probe_f1(x[labelled], y[labelled], test_x, test_y, k) >= target:
            return len(labelled)
        if order == "random":
            taken = set(labelled)
            labelled += [i for i in perm if i not in taken][:ROUND]
        else:
            labelled += _active_next(labelled, x, y, teacher_probs, k)
    return len(x)


def active_vs_random(x, y, test_x, test_y, teacher_probs, k: int) -> dict:
    full = probe_f1(x, y, test_x, test_y, k)
    target = 0.95 * full
    runs = {
        order: [labels_needed(x, y, test_x, test_y, teacher_probs, k, seed, target, order) for seed in (0, 1, 2)]
        for order in ("active", "random")
    }
    active, rand = statistics.median(runs["active"]), statistics.median(runs["random"])
    return {
        "full_data_macro_f1": round(full, 4),
        "target_macro_f1": round(target, 4),
        "training_rows": len(x),
        "runs": runs,
        "active": active,
        "random": rand,
        "active_over_random": round(active / rand, 3),
        "goal_active_at_most_half_of_random": active <= rand / 2,
    }


def _score(c) -> dict:
    m = c.metrics["macro_f1"]
    return {
        "model": c.model,
        "macro_f1": round(m.value, 4),
        "ci": [round(m.ci[0], 4), round(m.ci[1], 4)] if m.ci else None,
        "cost_per_1k": c.cost.cost_per_1k if c.cost else None,
        "cpu_seconds_per_1k": c.cost.cpu_seconds_per_1k if c.cost else None,
    }


def student_vs_teacher(spec, kind, train, test, work: Path, best_teacher) -> tuple[dict, object]:
    """Train a specialist on the teacher's confident labels only; both judged on the gold test split."""
    from fleet.stages.evaluation import contender

    teacher, teacher_score = best_teacher
    out = teacher.predict(train["text"].tolist())
    conf = np.asarray(out.probabilities).max(1)
    keep = conf >= spec.labeling.min_confidence
    taught = pd.DataFrame({"text": train["text"][keep], "label": np.asarray(out.predictions)[keep]})
    t0 = time.perf_counter()
    kind.train(spec, taught.reset_index(drop=True), work / "student", progress=False)
    student = kind.load(work / "student" / "model", "student", spec)
    student_score = contender(kind, spec, "challenger", student, test)
    s, t = _score(student_score), _score(teacher_score)
    gold_agreement = float(np.mean(np.asarray(out.predictions)[keep] == train["label"].to_numpy()[keep]))
    return {
        "teacher": t,
        "student": s,
        "teacher_labelled_rows": int(keep.sum()),
        "training_rows": len(train),
        "min_confidence": spec.labeling.min_confidence,
        "teacher_label_accuracy_on_kept_rows": round(gold_agreement, 4),
        "student_train_s": round(time.perf_counter() - t0, 1),
        "gain": round(s["macro_f1"] - t["macro_f1"], 4),
        "cost_ratio_student_over_teacher": round(s["cost_per_1k"] / t["cost_per_1k"], 3)
        if s["cost_per_1k"] and t["cost_per_1k"]
        else None,
    }, student


def _held_out(spec, kind, dataset_texts: set[str], cap: int, seed: int) -> pd.DataFrame:
    from fleet.core.text import normalize_text
    from fleet.data.sources import load_raw

    raw = load_raw(spec.data, kind.source_columns(spec))
    raw["text"] = [normalize_text(str(t)) for t in raw["text"]]
    raw["label"] = [spec.data.label_map.get(str(v), str(v)) for v in raw["label"]]
    fresh = raw[raw["label"].isin(list(spec.labels)) & ~raw["text"].isin(dataset_texts) & (raw["text"] != "")]
    fresh = fresh.drop_duplicates("text")
    return fresh.sample(min(cap, len(fresh)), random_state=seed).reset_index(drop=True)


def cbpe_windows(spec, kind, model, test, test_probs, dataset_texts, windows: int, rows: int) -> dict:
    """Estimated vs true macro-F1 on held-out traffic windows, unshifted and shifted."""
    from fleet.metrics.cbpe import Calibrator, estimate_macro_f1, true_macro_f1

    labels = list(spec.labels)
    k = len(labels)
    y_test = np.array([labels.index(lab) for lab in test["label"]])
    cal = Calibrator.fit(np.asarray(test_probs), y_test)
    reference = true_macro_f1(y_test, np.asarray(test_probs).argmax(1), k)
    pool = _held_out(spec, kind, dataset_texts, 3000, 0)
    probs = np.asarray(model.predict(pool["text"].tolist()).probabilities)
    y = np.array([labels.index(lab) for lab in pool["label"]])
    lengths = pool["text"].str.len().to_numpy()
    rare = int(np.bincount(y_test, minlength=k).argmin())
    groups = {
        "none": np.arange(len(pool)),
        "short": np.flatnonzero(lengths <= np.quantile(lengths, 0.3)),
        "long": np.flatnonzero(lengths >= np.quantile(lengths, 0.7)),
    }
    out, rng = [], random.Random(0)
    for shift in ("none", "prior", "short", "long"):
        for w in range(windows):
            if shift == "prior":
                rare_idx, rest_idx = np.flatnonzero(y == rare).tolist(), np.flatnonzero(y != rare).tolist()
                idx = [rng.choice(rare_idx) if rng.random() < 0.8 else rng.choice(rest_idx) for _ in range(rows)]
            else:
                idx = rng.sample(groups[shift].tolist(), min(rows, len(groups[shift])))
            true = true_macro_f1(y[idx], probs[idx].argmax(1), k)
            est = estimate_macro_f1(cal, probs[idx])
            out.append({"shift": shift, "window": w, "true": round(true, 4), "estimated": round(est, 4)})
    errors = [abs(o["true"] - o["estimated"]) for o in out]
    minimum = reference - ALARM_MARGIN
    dropped = [o for o in out if reference - o["true"] >= 0.10]
    return {
        "reference_macro_f1": round(reference, 4),
        "held_out_rows": len(pool),
        "window_rows": rows,
        "windows": out,
        "mae": round(float(np.mean(errors)), 4),
        "mae_by_shift": {
            s: round(float(np.mean([abs(o["true"] - o["estimated"]) for o in out if o["shift"] == s])), 4)
            for s in ("none", "prior", "short", "long")
        },
        "min_estimated_score": round(minimum, 4),
        "windows_dropped_by_0_10": len(dropped),
        "alarmed_on_dropped": sum(o["estimated"] < minimum for o in dropped),
        "false_alarms": sum(o["estimated"] < minimum and reference - o["true"] < ALARM_MARGIN for o in out),
    }


def label_issues(spec, store, train: pd.DataFrame, seed: int = 0) -> dict:
    from fleet.labeling import audit

    labels = list(spec.labels)
    rng = np.random.default_rng(seed)
    noisy = train.copy().reset_index(drop=True)
    flip = rng.choice(len(noisy), round(0.05 * len(noisy)), replace=False)
    for i in flip:
        noisy.at[i, "label"] = rng.choice([lab for lab in labels if lab != noisy.at[i, "label"]])
    found = audit.audit(spec, store, noisy, "benchmark", to_review=False).flagged
    flagged = set(noisy.index[noisy["text"].isin(set(found["text"]))])
    hits = len(flagged & set(flip.tolist()))
    return {
        "flipped": len(flip),
        "flagged": len(flagged),
        "precision": round(hits / max(len(flagged), 1), 4),
        "recall": round(hits / len(flip), 4),
    }


def run_specialist(spec, store, work: Path, windows: int) -> dict:
    from fleet.data import versions
    from fleet.kinds import kind_of
    from fleet.models import cache
    from fleet.stages.curation import curate
    from fleet.stages.evaluation import contender

    kind = kind_of(spec)
    ds = curate(spec, store)
    split = {s: versions.load_split(store, spec.name, ds.version, s) for s in ("train", "validation", "test")}
    train, test = split["train"], split["test"]
    labels = list(spec.labels)
    k = len(labels)
    t0 = time.perf_counter()
    length = spec.train.max_length or 128
    x, test_x = (
        cache.pooled(spec.base_model, train["text"].tolist(), length),
        cache.pooled(spec.base_model, test["text"].tolist(), length),
    )
    y = np.array([labels.index(lab) for lab in train["label"]])
    test_y = np.array([labels.index(lab) for lab in test["label"]])
    embed_s = time.perf_counter() - t0

    teachers = [(b, contender(kind, spec, "baseline", b, test)) for b in kind.baselines(spec, train)]
    best = max(teachers, key=lambda t: t[1].metrics["macro_f1"].value)
    teacher_probs = np.asarray(best[0].predict(train["text"].tolist()).probabilities)
    result: dict = {"dataset_version": ds.version, "embed_s": round(embed_s, 1)}
    result["labels_to_95pct"] = active_vs_random(x, y, test_x, test_y, teacher_probs, k)
    print(spec.name, "labels_to_95pct", json.dumps(result["labels_to_95pct"]), flush=True)
    result["label_issues"] = label_issues(spec, store, train)
    print(spec.name, "label_issues", json.dumps(result["label_issues"]), flush=True)
    result["student_vs_teacher"], _ = student_vs_teacher(spec, kind, train, test, work, best)
    print(spec.name, "student_vs_teacher", json.dumps(result["student_vs_teacher"]), flush=True)

    kind.train(spec, train, work / "gold", progress=False)
    gold = kind.load(work / "gold" / "model", "specialist", spec)
    gold_score = contender(kind, spec, "challenger", gold, test)
    texts = set().union(*(set(df["text"]) for df in split.values()))
    result["cbpe"] = cbpe_windows(spec, kind, gold, test, gold_score.outputs.probabilities, texts, windows, 200)
    result["cbpe"]["specialist_macro_f1"] = _score(gold_score)
    print(spec.name, "cbpe mae", result["cbpe"]["mae"], result["cbpe"]["mae_by_shift"], flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--only", action="append", default=[], help="These classifiers only (default: both).")
    ap.add_argument("--windows", type=int, default=10, help="Traffic windows per kind of shift.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flywheel.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-flywheel-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    from fleet.core.storage import LocalStore
    from fleet.kinds import load_fleet

    fleet = load_fleet(args.fleet)
    names = args.only or [n for n, s in fleet.specialists.items() if s.labels and s.task == "text-classification"]
    store = LocalStore(work / "store")
    per = {n: run_specialist(fleet.specialists[n], store, work / n, args.windows) for n in names}
    cb = [w for r in per.values() for w in r["cbpe"]["windows"]]
    summary = {
        "labels_to_95pct": {
            n: {k: r["labels_to_95pct"][k] for k in ("active", "random", "active_over_random")}
            | {"goal_met": r["labels_to_95pct"]["goal_active_at_most_half_of_random"]}
            for n, r in per.items()
        },
        "student_vs_teacher": {
            n: {k: r["student_vs_teacher"][k] for k in ("gain", "cost_ratio_student_over_teacher")}
            | {
                "goal_met": r["student_vs_teacher"]["gain"] >= 0
                and (r["student_vs_teacher"]["cost_ratio_student_over_teacher"] or 1) <= 0.1
            }
            for n, r in per.items()
        },
        "cbpe_mae": round(float(np.mean([abs(w["true"] - w["estimated"]) for w in cb])), 4),
        "cbpe_goal_met": bool(
            np.mean([abs(w["true"] - w["estimated"]) for w in cb]) <= 0.03
            and all(r["cbpe"]["alarmed_on_dropped"] == r["cbpe"]["windows_dropped_by_0_10"] for r in per.values())
        ),
        "label_issues": {n: r["label_issues"] for n, r in per.items()},
    }
    doc = {
        "about": __doc__.strip().splitlines()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "summary": summary,
        "specialists": per,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
