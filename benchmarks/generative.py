"""The generative specialist's training and answering costs, on the demo's invoice extractor.

1. Training throughput: the pipeline's fine-tuning (``fleet.kinds.generation.train.fine_tune``: transformers'
   Trainer, peft LoRA, the chat template, response-only loss) against a bare loop over the same examples
   with the same settings (the same LoRA modules and rank, AdamW, learning rate, linear schedule with the
   same warm-up, batch size, seed): tokens per second, counting the examples' real (non-padding) tokens;
   ``--rounds`` of each (2), alternating which goes first, the ratio taken of the medians.
2. Answering: every contender (the fine-tuned model, the base model zero-shot and few-shot) on the frozen
   test split: field-F1 with its 95% interval, schema-valid rate, generated tokens per second at the
   serving batch size, and cost per 1,000 answers (CPU-seconds at the fleet file's price).
Writes benchmarks/results/generative.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_loop(spec, rows: list[dict]) -> dict:
    """The same training with a plain PyTorch loop (no Trainer); returns its tokens per second."""
    import torch
    from transformers import get_linear_schedule_with_warmup, set_seed

    from fleet.kinds.generation.train import _lora
    from fleet.models import cache

    tokenizer, model = cache.trainable(spec.base_model, is_causal=True)
    set_seed(spec.train.seed)
    model = _lora(spec, model)
    cfg = spec.train
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    steps = math.ceil(len(rows) / cfg.batch_size) * math.ceil(cfg.epochs)
    warmup = int(cfg.warmup_steps * steps) if cfg.warmup_steps < 1 else int(cfg.warmup_steps)
    sched = get_linear_schedule_with_warmup(opt, warmup, steps)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start, tokens = time.perf_counter(), 0
    model.train()
    for _ in range(math.ceil(cfg.epochs)):
        for i in range(0, len(order), cfg.batch_size):
            batch = [rows[j] for j in order[i : i + cfg.batch_size]]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch])
            mask = torch.tensor([r["attention_mask"] + [0] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            tokens += int(mask.sum())
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "steps": steps}


def pipeline(spec, train, rows: list[dict], run_dir: Path) -> tuple[dict, object]:
    from fleet.kinds.generation.train import fine_tune

    fit = fine_tune(spec, train, run_dir, progress=False)  # a fresh folder each time: nothing to resume
    tokens = sum(len(r["input_ids"]) for r in rows) * math.ceil(spec.train.epochs)
    return {
        "seconds": round(fit.train_seconds, 1),
        "tokens": tokens,
        "tokens_per_s": round(tokens / fit.train_seconds, 1),
        "train_loss": round(fit.train_loss, 4),
    }, fit


def contenders(spec, store, ds, fit, work: Path) -> list[dict]:
    from fleet.core.results import TrainedModel
    from fleet.data import versions
    from fleet.stages import evaluation

    test = versions.load_split(store, spec.name, ds.version, "test")
    train = versions.load_split(store, spec.name, ds.version, "train")
    model = TrainedModel(
        specialist=spec.name,
        training_key="benchmark",
        dataset_version=ds.version,
        model_dir=str(work / "run0" / "model"),
        **fit.__dict__,
    )
    report = evaluation.judge(spec, test, model, evaluation.general(spec, test, None, train))
    out = []
    for c in [report.challenger, *report.baselines]:
        f1 = c.metrics["field_f1"]
        out.append(
            {
                "model": c.model,
                "field_f1": round(f1.value, 4),
                "field_f1_ci": [round(x, 4) for x in f1.ci or ()],
                "schema_valid": round(c.value("schema_valid"), 4),
                "exact_match": round(c.value("exact_match"), 4),
                "tokens_per_s": c.cost.tokens_per_s,
                "cost_per_1k_answers": c.cost.cost_per_1k,
                "latency_p50_ms": c.cost.latency_p50_ms,
            }
        )
    return out


def rounds(spec, train, rows: list[dict], work: Path, n: int) -> tuple[dict, object]:
    """Pipeline and bare loop ``n`` times each, alternating which goes first (the machine's noise and any
    warm-up fall on both); the first pipeline run's model is the one scored."""
    import statistics

    runs: dict[str, list[dict]] = {"pipeline": [], "bare_loop": []}
    fit = None
    for i in range(n):
        for which in ("pipeline", "bare_loop") if i % 2 == 0 else ("bare_loop", "pipeline"):
            if which == "bare_loop":
                runs[which].append(bare_loop(spec, rows))
                continue
            measured, this_fit = pipeline(spec, train, rows, work / f"run{i}")
            runs[which].append(measured)
            fit = fit or this_fit
    medians = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    return {
        "pipeline": runs["pipeline"],
        "bare_loop": runs["bare_loop"],
        "median_tokens_per_s": medians,
        "pipeline_over_bare": round(medians["pipeline"] / medians["bare_loop"], 3),
    }, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet", default=str(ROOT / "deployments" / "fleet.yaml"))
    ap.add_argument("--specialist", default="invoice-extractor")
    ap.add_argument("--epochs", type=float, default=1.0, help="Epochs for both training runs (the demo uses 1).")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="Training rounds, the order alternating (pipeline first, "
        "then bare loop first, ...): the ratio is of the medians.",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generative.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-gen-"))
    os.environ.setdefault("FLEET_HOME", str(ROOT / ".fleet"))  # the converted base model is cached there

    from fleet.core.storage import LocalStore
    from fleet.data import versions
    from fleet.kinds import load_fleet
    from fleet.kinds.generation.chat_template import example
    from fleet.kinds.generation.spec import generation_of
    from fleet.models import base_models
    from fleet.stages.curation import curate

    spec = load_fleet(args.fleet).specialists[args.specialist]
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": args.epochs})})
    store = LocalStore(work / "store")
    ds = curate(spec, store)
    train = versions.load_split(store, spec.name, ds.version, "train")
    tokenizer = base_models.load_tokenizer(spec.base_model)
    limit = generation_of(spec).max_prompt_tokens + generation_of(spec).max_response_tokens + 1
    rows = [
        example(tokenizer, generation_of(spec).system, p, r, limit) for p, r in zip(train["text"], train["response"])
    ]
    training, fit = rounds(spec, train, rows, work, args.rounds)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "specialist": spec.name,
        "train_examples": len(rows),
        "epochs": args.epochs,
        "training": training,
        "contenders": contenders(spec, store, ds, fit, work),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
