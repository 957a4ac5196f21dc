"""One pass over the test split per contender, timed as it goes.

Every test row is predicted exactly once: the first ``latency_samples`` rows one at a time (p50/p95
latency at batch size 1), the next ``timing_rows`` in request-sized batches of ``serving_batch_size``
in their given order (throughput, CPU-seconds and cost per 1,000 predictions), and the rest in
length-sorted batches, untimed. The outputs come back in the rows' order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fleet.core.results import Cost, Outputs
from fleet.core.sections import EvaluationSpec

Predict = Callable[[list[str]], Outputs]


def _run(predict: Predict, texts: list[str], rows: list[int], size: int) -> tuple[list[Outputs], float, float]:
    """Predict ``rows`` of ``texts`` in batches of ``size``: (outputs per batch, wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    parts = [predict([texts[i] for i in rows[j : j + size]]) for j in range(0, len(rows), size)]
    return parts, time.perf_counter() - wall, time.process_time() - cpu


def _cost(n: int, wall: float, cpu: float, ev: EvaluationSpec, on_gpu: bool) -> Cost:
    n = max(n, 1)
    cpu_per_1k = cpu / n * 1000
    per_1k = (wall / n * 1000) / 3600 * ev.price_per_gpu_hour if on_gpu else cpu_per_1k / 3600 * ev.price_per_cpu_hour
    return Cost(
        throughput_per_s=round(n / wall, 1) if wall > 0 else None,
        serving_batch_size=ev.serving_batch_size,
        cpu_seconds_per_1k=round(cpu_per_1k, 3),
        cost_per_1k=round(per_1k, 6),
    )


def _in_order(n: int, rows: list[int], parts: list[Outputs]) -> Outputs:
    """``parts`` (answers to ``rows``, in that order) as the answers to rows 0..n-1: every per-row field kept
    (a generative answer's tokens and confidence too, which the cascade reads)."""
    merged = Outputs.concat(parts)
    position = {i: pos for pos, i in enumerate(rows)}
    assert sorted(position) == list(range(n)), "every row answered once"
    return merged.rows([position[i] for i in range(n)])


def measure(
    predict: Predict, texts: list[str], ev: EvaluationSpec, on_gpu: bool = False, rest_batch_size: int = 64
) -> tuple[Outputs, Cost]:
    """(outputs for every text, measured cost); ``predict`` answers a list of texts."""
    n = len(texts)
    k, end = min(ev.latency_samples, n), min(n, ev.latency_samples + ev.timing_rows)
    lat, singles = [], []
    for i in range(k):
        t0 = time.perf_counter()
        singles.append(predict([texts[i]]))
        lat.append((time.perf_counter() - t0) * 1000)
    timed_rows = list(range(k, end))
    timed, wall, cpu = _run(predict, texts, timed_rows, ev.serving_batch_size)
    rest = sorted(range(end, n), key=lambda i: len(texts[i]))
    untimed, _, _ = _run(predict, texts, rest, rest_batch_size)
    outputs = _in_order(n, [*range(k), *timed_rows, *rest], [*singles, *timed, *untimed])
    if not timed_rows:  # fewer rows than latency samples: the single calls are all there is to time
        wall, cpu = sum(lat) / 1000, sum(lat) / 1000
    cost = _cost(len(timed_rows) or k, wall, cpu, ev, on_gpu)
    timed_out = Outputs.concat(timed or singles)
    if timed_out.tokens is not None and wall > 0:  # generated tokens per second at the serving batch size
        cost.tokens_per_s = round(sum(timed_out.tokens) / wall, 1)
    cost.latency_p50_ms = round(float(np.percentile(lat, 50)), 2) if lat else None
    cost.latency_p95_ms = round(float(np.percentile(lat, 95)), 2) if lat else None
    return outputs, cost
