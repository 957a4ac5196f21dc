"""The data flywheel on the demo's two classifiers: how few human labels, how good a student, how close an
estimate without labels, how well label issues are found. Writes benchmarks/results/flywheel.json.

Each classifier's data is curated as `fleet run` curates it (a temporary store). Its training split plays
the unlabelled traffic and its gold labels the human reviewer; the test split is the gold judge. Measured:

- ``labels_to_95pct``: human labels needed before the specialist reaches 95% of the macro-F1 it gets from
  the whole training split, labelling in the review queue's order (``active``: ``fleet.labeling.queue.rank``,
  the specialist's uncertainty plus the teacher's disagreement as far as the teacher has been shown right more
  often than the specialist, each round's 10 labels picked for variety by ``queue.diversify``) and in
  ``random`` order, each the median of 3 seeds (the first 10
  labels are the same random rows for both), and the same over 20 seeds beside it; the learning curves of
  seeds 0-2 are drawn in flywheel_learning_curves.png. The specialist here is
  the first stage of the fleet's LP-FT training, a linear probe (logistic regression) on the base encoder's
  frozen embeddings: it is retrained after every round, which a LoRA fine-tune per round (about 100 s here)
  would make a matter of hours on 2 cores. While the labels seen hold one class only (the first 10 SMS may
  all be ham), the specialist answers that class, sure of it, as one fine-tuned on them would.
- ``student_vs_teacher``: the teacher is the best of the specialist's general contenders on the gold test
  split (the demo names `embedding-zero-shot`); it labels the training split, the rows at or above
  ``labeling.min_confidence`` train a real specialist (the fleet's LoRA fine-tune), and both are scored on the
  gold test split as the evaluation scores contenders (macro-F1 with 95% intervals, measured cost per 1,000).
- ``cbpe``: the specialist fine-tuned on the gold labels is calibrated on its test split (as its reference
  profile is; the estimate assumes ``drift.estimate_assumes``, label shift by default, and plain CBPE's
  covariate-shift estimate is reported beside it), then answers traffic windows of 200 rows drawn from the source rows the dataset never used
  (held-out traffic with gold labels): unshifted, prior-shifted (the rarest label made 80%, as the drift
  benchmark and `fleet simulate --shift prior` make it) and covariate-shifted (only short, or only long,
  texts). Reported: the mean absolute error of CBPE's estimated macro-F1 against the true one, and whether it
  alarms (estimate below the reference macro-F1 minus 0.05) on every window whose true score dropped by 0.10;
  the goal is judged on the drift benchmark's windows (unshifted and prior-shifted), the short/long windows are
  reported beside them (in a window nearly without one label, macro-F1 itself swings). Domain-shifted windows (another specialist's texts) have no gold labels in this label set and are left out.
- ``label_issues``: 5% of the training labels flipped at random; `fleet audit`'s functions (cleanlab's
  ``find_label_issues`` on 5-fold out-of-fold probabilities of the linear probe) flag rows; precision and
  recall against the flipped rows (rows with an original label error count against precision). Beside them:
  how many rows the audit flags before any flip (the corpus's own doubtful labels, with a sample) and the
  precision when those rows are left out.
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

ROUND = 10  # labels per review round (and the first, random, labels)
ALARM_MARGIN = 0.05  # the benchmark's min_estimated_score: the reference macro-F1 less this
DRIFT_WINDOWS = ("none", "prior")  # the drift benchmark's windows with gold labels; short/long are extra


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


def _active_next(
    labelled: list[int], seen: dict[int, int], x, y, texts, teacher_probs: np.ndarray, k: int
) -> list[int]:
    """The review queue's next round, ranked by ``fleet.labeling.queue.rank`` and its first rows picked by
    ``queue.diversify`` as `fleet review` does: the
    probe's answers on the unlabelled rows, the teacher's labels, and the human (gold) labels so far with the
    probe's answer on each row from before it was labelled (``seen``), which weigh the teacher's disagreement."""
    from fleet.labeling import ledger, queue

    rest = np.setdiff1d(np.arange(len(x)), labelled)
    y_lab = y[labelled]
    if len(set(y_lab)) > 1:
        probs = _probe_probs(x[labelled], y_lab, x[rest], k)
    else:  # one label seen so far: a specialist trained on it answers that label, sure of it
        probs = np.zeros((len(rest), k))
        probs[:, y_lab[0]] = 1.0
    judged = [i for i in labelled if i in seen]
    answers = pd.DataFrame(
        {
            "id": [str(i) for i in rest] + [str(i) for i in judged],
            "specialist": [str(c) for c in probs.argmax(1)] + [str(seen[i]) for i in judged],
            "specialist_confidence": np.concatenate([probs.max(1), np.ones(len(judged))]),
            "uncertainty": np.concatenate([queue.uncertainty(probs.tolist(), len(rest)), np.zeros(len(judged))]),
        }
    )
    every = np.arange(len(x))
    taught = pd.DataFrame(
        {
            "id": [str(i) for i in every],
            "text": texts,
            "label": [str(c) for c in teacher_probs.argmax(1)],
            "source": "teacher",
            "by": "teacher",
            "confidence": teacher_probs.max(1),
        }
    )
    human = pd.DataFrame(
        {"id": [str(i) for i in labelled], "text": [texts[i] for i in labelled], "label": [str(y[i]) for i in labelled]}
    ).assign(source="human", by="reviewer", confidence=None)
    labels = ledger.current(pd.concat([taught, human], ignore_index=True).assign(at="", batch=""))
    ranked = queue.rank(pd.DataFrame({"id": [str(i) for i in every], "text": texts}), answers, labels)
    picked = [int(i) for i in queue.diversify(ranked, ROUND)["id"].head(ROUND)]
    position = {int(r): j for j, r in enumerate(rest)}
    seen.update({i: int(probs[position[i]].argmax()) for i in picked})
    return picked


def _rounds(x, y, texts, teacher_probs, k: int, seed: int, order: str):
    """The labelled rows after each round of ``order``-wise labelling (the first round random)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x)).tolist()
    labelled, seen = perm[:ROUND], {}
    while True:
        yield labelled
        if len(labelled) >= len(x):
            return
        if order == "random":
            taken = set(labelled)
            labelled = labelled + [i for i in perm if i not in taken][:ROUND]
        else:
            labelled = labelled + _active_next(labelled, seen, x, y, texts, teacher_probs, k)


def labels_needed(x, y, texts, test_x, test_y, teacher_probs, k: int, seed: int, target: float, order: str) -> int:
    """Human labels before the probe reaches ``target`` macro-F1, labelling ``order``-wise in rounds."""
    for labelled in _rounds(x, y, texts, teacher_probs, k, seed, order):
        if probe_f1(x[labelled], y[labelled], test_x, test_y, k) >= target:
            return len(labelled)
    return len(x)


def learning_curves(x, y, texts, test_x, test_y, teacher_probs, k: int, up_to: int) -> dict:
    """The probe's macro-F1 after each round up to ``up_to`` labels, both orders, seeds 0-2 (for the figure)."""
    curves: dict = {}
    for order in ("active", "random"):
        for seed in (0, 1, 2):
            points = []
            for labelled in _rounds(x, y, texts, teacher_probs, k, seed, order):
                if len(labelled) > up_to:
                    break
                points.append([len(labelled), round(probe_f1(x[labelled], y[labelled], test_x, test_y, k), 4)])
            curves.setdefault(order, []).append(points)
    return curves


def curves_png(per: dict) -> bytes:
    """Macro-F1 against human labels, queue order and random order, one panel per specialist."""
    from fleet.report.figures import figure, to_png

    fig = figure(figsize=(5.2 * len(per), 3.8), dpi=100)
    axes = fig.subplots(1, len(per), squeeze=False)[0]
    for ax, (name, r) in zip(axes, per.items()):
        lab = r["labels_to_95pct"]
        for order, colour in (("active", "tab:blue"), ("random", "tab:grey")):
            for i, points in enumerate(lab["curves"][order]):
                n, f1 = zip(*points)
                ax.plot(n, f1, color=colour, lw=1.2, alpha=0.8, label=f"{order} (seeds 0-2)" if i == 0 else None)
        ax.axhline(lab["target_macro_f1"], color="tab:red", ls="--", lw=1, label="95% of all labels")
        ax.set_title(f"{name}: active {lab['active']:g} vs random {lab['random']:g} labels")
        ax.set_xlabel("human labels")
        ax.set_ylabel("macro-F1 (test split)")
        ax.legend(loc="lower right", fontsize=8)
    return to_png(fig)


def active_vs_random(x, y, texts, test_x, test_y, teacher_probs, k: int, seeds: int) -> dict:
    """The goal's figure from seeds 0-2; the same runs over ``seeds`` seeds beside it, since one round more or
    less at the crossing of a noisy learning curve moves a median of 3 by a third."""
    full = probe_f1(x, y, test_x, test_y, k)
    target = 0.95 * full
    every = {
        order: [
            labels_needed(x, y, texts, test_x, test_y, teacher_probs, k, seed, target, order) for seed in range(seeds)
        ]
        for order in ("active", "random")
    }
    runs = {order: r[:3] for order, r in every.items()}
    active, rand = statistics.median(runs["active"]), statistics.median(runs["random"])
    more = {order: statistics.median(r) for order, r in every.items()}
    up_to = int(min(len(x), 2 * max(active, rand)))
    return {
        "full_data_macro_f1": round(full, 4),
        "target_macro_f1": round(target, 4),
        "training_rows": len(x),
        "runs": runs,
        "active": active,
        "random": rand,
        "active_over_random": round(active / rand, 3),
        "goal_active_at_most_half_of_random": active <= rand / 2,
        f"over_{seeds}_seeds": {
            "runs": every,
            "active_median": more["active"],
            "random_median": more["random"],
            "active_over_random_median": round(more["active"] / more["random"], 3),
            "active_over_random_mean": round(statistics.mean(every["active"]) / statistics.mean(every["random"]), 3),
        },
        "curves": learning_curves(x, y, texts, test_x, test_y, teacher_probs, k, up_to),
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


def _student(spec, kind, train, test, work: Path, taught: pd.DataFrame, teacher_score, name: str) -> dict:
    from fleet.stages.evaluation import contender

    t0 = time.perf_counter()
    kind.train(spec, taught.reset_index(drop=True), work / name, progress=False)
    student = kind.load(work / name / "model", name, spec)
    s, t = _score(contender(kind, spec, "challenger", student, test)), _score(teacher_score)
    return {
        "student": s,
        "teacher_labelled_rows": len(taught),
        "teacher_label_accuracy": round(float(np.mean(taught["label"].to_numpy() == taught["gold"].to_numpy())), 4),
        "student_train_s": round(time.perf_counter() - t0, 1),
        "gain": round(s["macro_f1"] - t["macro_f1"], 4),
        "cost_ratio_student_over_teacher": round(s["cost_per_1k"] / t["cost_per_1k"], 3)
        if s["cost_per_1k"] and t["cost_per_1k"]
        else None,
    }


def student_vs_teacher(spec, kind, train, test, work: Path, best_teacher) -> dict:
    """A specialist trained on the teacher's labels of the whole training split (no human label), and one on
    those at or above ``labeling.min_confidence`` (what a retrain takes in); all judged on the gold test split."""
    teacher, teacher_score = best_teacher
    out = teacher.predict(train["text"].tolist())
    taught = pd.DataFrame({"text": train["text"], "label": out.predictions, "gold": train["label"]})
    confident = np.asarray(out.probabilities).max(1) >= spec.labeling.min_confidence
    every = _student(spec, kind, train, test, work, taught, teacher_score, "student-all")
    sure = _student(spec, kind, train, test, work, taught[confident], teacher_score, "student-confident")
    return {
        "teacher": _score(teacher_score),
        "training_rows": len(train),
        "all_teacher_labels": every,
        f"teacher_labels_at_or_above_{spec.labeling.min_confidence:g}": sure,
        "gain": every["gain"],
        "cost_ratio_student_over_teacher": every["cost_ratio_student_over_teacher"],
    }


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
            est = estimate_macro_f1(cal, probs[idx], spec.drift.estimate_assumes)
            plain = estimate_macro_f1(cal, probs[idx], "covariate-shift")
            out.append(
                {
                    "shift": shift,
                    "window": w,
                    "true": round(true, 4),
                    "estimated": round(est, 4),
                    "estimated_covariate_shift": round(plain, 4),
                }
            )
    drift_windows = [o for o in out if o["shift"] in DRIFT_WINDOWS]  # the goal's windows
    errors = [abs(o["true"] - o["estimated"]) for o in drift_windows]
    minimum = reference - ALARM_MARGIN
    dropped = [o for o in drift_windows if reference - o["true"] >= 0.10]
    return {
        "reference_macro_f1": round(reference, 4),
        "held_out_rows": len(pool),
        "window_rows": rows,
        "windows": out,
        "mae": round(float(np.mean(errors)), 4),
        "assumes": spec.drift.estimate_assumes,
        "mae_by_shift": {
            s: round(float(np.mean([abs(o["true"] - o["estimated"]) for o in out if o["shift"] == s])), 4)
            for s in ("none", "prior", "short", "long")
        },
        "mae_by_shift_covariate_shift_assumed": {
            s: round(
                float(np.mean([abs(o["true"] - o["estimated_covariate_shift"]) for o in out if o["shift"] == s])), 4
            )
            for s in ("none", "prior", "short", "long")
        },
        "min_estimated_score": round(minimum, 4),
        "windows_dropped_by_0_10": len(dropped),
        "alarmed_on_dropped": sum(o["estimated"] < minimum for o in dropped),
        "false_alarms": sum(o["estimated"] < minimum and reference - o["true"] < ALARM_MARGIN for o in drift_windows),
        "covariate_windows_dropped_by_0_10": sum(
            reference - o["true"] >= 0.10 for o in out if o["shift"] not in DRIFT_WINDOWS
        ),
        "covariate_windows_alarmed_on_dropped": sum(
            reference - o["true"] >= 0.10 and o["estimated"] < minimum for o in out if o["shift"] not in DRIFT_WINDOWS
        ),
    }


def label_issues(spec, store, train: pd.DataFrame, seed: int = 0) -> dict:
    """Precision and recall against the flipped rows. The audit of the training split as it came (before any
    flip) is reported beside them: the rows it flags there are the corpus's own doubtful labels, which count
    against precision here though a reviewer would want most of them (a sample is listed)."""
    from fleet.labeling import audit

    labels = list(spec.labels)
    rng = np.random.default_rng(seed)
    noisy = train.copy().reset_index(drop=True)
    flip = rng.choice(len(noisy), round(0.05 * len(noisy)), replace=False)
    for i in flip:
        noisy.at[i, "label"] = rng.choice([lab for lab in labels if lab != noisy.at[i, "label"]])
    before = audit.audit(spec, store, train, "benchmark", to_review=False).flagged
    found = audit.audit(spec, store, noisy, "benchmark", to_review=False).flagged
    flagged = set(noisy.index[noisy["text"].isin(set(found["text"]))])
    hits = len(flagged & set(flip.tolist()))
    doubted = set(noisy.index[noisy["text"].isin(set(before["text"]))])
    fresh = flagged - (doubted - set(flip.tolist()))
    return {
        "flipped": len(flip),
        "flagged": len(flagged),
        "precision": round(hits / max(len(flagged), 1), 4),
        "recall": round(hits / len(flip), 4),
        "flagged_before_flipping": len(before),
        "precision_leaving_out_rows_flagged_before_flipping": round(hits / max(len(fresh), 1), 4),
        "flagged_before_flipping_sample": [
            {"given": r["given"], "suggested": r["suggested"], "text": r["text"][:120]}
            for r in before.head(8).to_dict("records")
        ],
    }


def run_specialist(spec, store, work: Path, windows: int, seeds: int) -> dict:
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
    # the teachers answer first: the encoder remembers each text's embedding, and a teacher on the same encoder
    # would otherwise be timed on remembered embeddings
    teachers = [(b, contender(kind, spec, "baseline", b, test)) for b in kind.baselines(spec, train)]
    best = max(teachers, key=lambda t: t[1].metrics["macro_f1"].value)
    t0 = time.perf_counter()
    length = spec.train.max_length or 128
    x, test_x = (
        cache.pooled(spec.base_model, train["text"].tolist(), length),
        cache.pooled(spec.base_model, test["text"].tolist(), length),
    )
    y = np.array([labels.index(lab) for lab in train["label"]])
    test_y = np.array([labels.index(lab) for lab in test["label"]])
    embed_s = time.perf_counter() - t0
    teacher_probs = np.asarray(best[0].predict(train["text"].tolist()).probabilities)
    result: dict = {"dataset_version": ds.version, "embed_s": round(embed_s, 1)}
    result["labels_to_95pct"] = active_vs_random(x, y, train["text"].tolist(), test_x, test_y, teacher_probs, k, seeds)
    print(spec.name, "labels_to_95pct", json.dumps(result["labels_to_95pct"]), flush=True)
    result["label_issues"] = label_issues(spec, store, train)
    print(spec.name, "label_issues", json.dumps(result["label_issues"]), flush=True)
    result["student_vs_teacher"] = student_vs_teacher(spec, kind, train, test, work, best)
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
    ap.add_argument("--seeds", type=int, default=20, help="labels_to_95pct: seeds beside the goal's first 3.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flywheel.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-flywheel-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    from fleet.core.storage import LocalStore
    from fleet.kinds import load_fleet

    fleet = load_fleet(args.fleet)
    names = args.only or [n for n, s in fleet.specialists.items() if s.labels and s.task == "text-classification"]
    store = LocalStore(work / "store")
    per = {n: run_specialist(fleet.specialists[n], store, work / n, args.windows, args.seeds) for n in names}
    cb = [w for r in per.values() for w in r["cbpe"]["windows"] if w["shift"] in DRIFT_WINDOWS]
    summary = {
        "labels_to_95pct": {
            n: {k: r["labels_to_95pct"][k] for k in ("active", "random", "active_over_random")}
            | {"goal_met": r["labels_to_95pct"]["goal_active_at_most_half_of_random"]}
            | {
                f"{k}_over_{args.seeds}_seeds": v
                for k, v in r["labels_to_95pct"][f"over_{args.seeds}_seeds"].items()
                if k.startswith("active_over_random_")
            }
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
    Path(args.out).with_name("flywheel_learning_curves.png").write_bytes(curves_png(per))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
