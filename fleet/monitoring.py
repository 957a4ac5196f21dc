"""The monitor's work for one specialist, and the traffic simulator used by the demo and tests."""

from __future__ import annotations

import io
import random
import tempfile
import uuid
from datetime import datetime

import numpy as np
import pandas as pd

from fleet import registry, traffic
from fleet.drift import Reference, detect, embedder, reference_key
from fleet.spec import SpecialistSpec
from fleet.storage import ObjectStore, StorageError

SHIFTS = ("none", "prior", "domain")


class MonitorError(RuntimeError):
    """The monitor cannot judge this specialist (no champion, no reference); the message says why."""


def champion_reference(spec: SpecialistSpec, store: ObjectStore) -> tuple[str, Reference]:
    champ = registry.champion_version(spec.name)
    if champ is None:
        raise MonitorError(f"{spec.name}: no champion yet; run `fleet run --only {spec.name}` first")
    key = (champ.tags or {}).get("train_key")
    try:
        return str(champ.version), Reference.from_bytes(store.get_bytes(reference_key(spec.name, key)))
    except StorageError:
        raise MonitorError(f"{spec.name}: champion v{champ.version} has no reference profile in {store.url}") from None


def check(spec: SpecialistSpec, store: ObjectStore, now: datetime | None = None) -> dict:
    """The drift verdict on the latest traffic window (``status``: drift, no-drift or insufficient-data)."""
    version, ref = champion_reference(spec, store)
    d = spec.drift
    window = traffic.read_window(store, "traffic", spec.name, d.window_hours, now)
    report = {"id": uuid.uuid4().hex[:12], "specialist": spec.name, "champion_version": version,
              "window_hours": d.window_hours, "window_rows": len(window)}
    if len(window) < d.min_window_rows:
        return {**report, "status": "insufficient-data", "drifted": False,
                "reason": f"{len(window)} rows in the last {d.window_hours:g} h < min_window_rows {d.min_window_rows}"}
    window = window.tail(d.max_window_rows)
    feedback = None
    fb = traffic.read_window(store, "feedback", spec.name, d.window_hours, now)
    if not fb.empty:
        joined = fb.merge(window[["text_hash", "label"]].rename(columns={"label": "predicted"}), on="text_hash")
        if len(joined):
            feedback = (int((joined["label"] == joined["predicted"]).sum()), len(joined))
    # input drift on distinct texts: repeats of one message are not evidence of a new distribution
    emb = embedder(spec).embed(list(dict.fromkeys(window["text"].tolist())))
    verdict = detect(ref, emb, window["label"].tolist(), window["score"].to_numpy(dtype=float), d.thresholds(),
                     feedback, d.permutations, d.seed)
    return {**report, "status": "drift" if verdict.drifted else "no-drift", "drifted": verdict.drifted,
            "fired": verdict.fired, "signals": verdict.signals, "window_rows": verdict.window_rows,
            "current_label_counts": verdict.signals["prediction"]["counts"],
            "reference_label_dist": ref.label_dist,
            "_plot": plot_png(spec.name, ref, window)}


def report_markdown(r: dict) -> str:
    lines = [f"# Drift report `{r['id']}` for `{r['specialist']}`", "",
             f"Champion v{r['champion_version']}; window: last {r['window_hours']:g} h, {r['window_rows']} rows.", "",
             f"**Verdict: {r['status']}**" + (f" (fired: {', '.join(r['fired'])})" if r.get("fired") else ""), ""]
    if "signals" in r:
        lines += ["| signal | test | statistic | p-value | threshold | fired |", "|---|---|---:|---:|---:|---|"]
        for name, s in r["signals"].items():
            lines.append(f"| {name} | {s['test']} | {s['statistic']:.4g} | {s['p_value']:.4g} | {s['threshold']} | "
                         f"{'yes' if s['fired'] else 'no'} |")
    else:
        lines.append(r.get("reason", ""))
    return "\n".join(lines) + "\n"


def plot_png(name: str, ref: Reference, window: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    labels = ref.labels
    counts = window["label"].value_counts()
    cur = np.array([counts.get(lab, 0) for lab in labels], dtype=float)
    x = np.arange(len(labels))
    a.bar(x - 0.2, [ref.label_dist.get(lab, 0) for lab in labels], 0.4, label="reference")
    a.bar(x + 0.2, cur / max(cur.sum(), 1), 0.4, label="current")
    a.set_xticks(x, labels)
    a.set_title("predicted labels")
    a.legend()
    bins = np.linspace(0, 1, 21)
    b.hist(ref.confidences, bins=bins, alpha=0.6, density=True, label="reference")
    b.hist(window["score"].astype(float), bins=bins, alpha=0.6, density=True, label="current")
    b.set_title("top-label confidence")
    b.legend()
    fig.suptitle(f"{name}: reference vs current traffic")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def simulate(spec: SpecialistSpec, store: ObjectStore, shift: str, rows: int = 200, seed: int = 0,
             other: SpecialistSpec | None = None, when: datetime | None = None) -> str:
    """Write a traffic window scored by the champion: held-out data (none), a changed label mix (prior),
    or another specialist's data (domain). Returns the part file's key."""
    from fleet.curation import load_raw, load_split, normalize_text
    from fleet.training import TextClassifier

    if shift not in SHIFTS:
        raise ValueError(f"--shift {shift}: must be one of {', '.join(SHIFTS)}")
    champ = registry.champion_version(spec.name)
    if champ is None:
        raise MonitorError(f"{spec.name}: no champion to score simulated traffic; run `fleet run --only {spec.name}`")
    test = load_split(store, spec.name, champ.tags["dataset_version"], "test")
    rng = random.Random(seed)
    if shift == "none":
        pool = test["text"].tolist()
        texts = rng.sample(pool, rows) if rows <= len(pool) else [rng.choice(pool) for _ in range(rows)]
    elif shift == "prior":
        # the rarest label in the test split becomes the majority
        rare = test["label"].value_counts().idxmin()
        pool_rare, pool_rest = test[test["label"] == rare]["text"].tolist(), test[test["label"] != rare]["text"].tolist()
        texts = [rng.choice(pool_rare) if rng.random() < 0.8 else rng.choice(pool_rest) for _ in range(rows)]
    else:
        if other is None:
            raise MonitorError("--shift domain needs another specialist's data (--from NAME)")
        raw = load_raw(other.data)
        pool = [t for t in (normalize_text(x) for x in raw["text"]) if t]
        texts = [rng.choice(pool) for _ in range(rows)]
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
        preds = TextClassifier(registry.download_model_dir(spec.name, str(champ.version), tmp)).predict(texts)
    return traffic.log_predictions(store, spec.name, texts, [p[0] for p in preds], [p[1] for p in preds],
                                   str(champ.version), when)



# --------------------------------------------------------------------------- retrain guardrails


def claim_retrain(spec: SpecialistSpec, store: ObjectStore, drift_report: str | None, now: datetime | None = None) -> dict:
    """Start a retrain unless one started within the cooldown; the alarm is recorded either way.

    Callers hold the specialist's retrain lock around this, so check-and-set is not racy.
    """
    import json
    from datetime import timezone

    now = now or datetime.now(timezone.utc)
    marker = f"retrains/{spec.name}/last.json"
    record = {"at": now.isoformat(), "drift_report": drift_report}
    if store.exists(marker):
        last = json.loads(store.get_bytes(marker))
        age_min = (now - datetime.fromisoformat(last["at"])).total_seconds() / 60
        if age_min < spec.drift.cooldown_minutes:
            store.put_bytes(f"alarms/{spec.name}/{now:%Y%m%dT%H%M%S%f}.json",
                            json.dumps({**record, "action": "recorded, cooldown"}).encode())
            return {"go": False, "reason": f"{spec.name}: retrain started {age_min:.1f} min ago, within the "
                                           f"{spec.drift.cooldown_minutes:g} min cooldown; alarm recorded"}
    store.put_bytes(marker, json.dumps(record).encode())
    store.put_bytes(f"alarms/{spec.name}/{now:%Y%m%dT%H%M%S%f}.json",
                    json.dumps({**record, "action": "retrain"}).encode())
    return {"go": True, "reason": "retrain started"}
