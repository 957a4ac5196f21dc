"""Versions as thin layers: a specialist is stored as its adapter, its base once under a content hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PLACES, TOY_TOPICS, write_toy_fleet

pytestmark = [pytest.mark.slow]


def toy_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [{"text": t.format(p), "label": lab} for lab, (_, temps) in TOY_TOPICS.items() for t in temps for p in PLACES]
    )


def test_adapter_round_trip_matches_the_merged_model(tmp_path, fleet_home):
    from fleet.kinds import parse_fleet
    from fleet.kinds.classification.predict import TextClassifier
    from fleet.kinds.classification.train import fine_tune
    from fleet.ops.export import merged

    spec = parse_fleet(
        {
            "specialists": {
                "toy": {
                    "data": {"source": "x.csv"},
                    "labels": ["weather", "food"],
                    "train": {"epochs": 1, "batch_size": 8, "max_length": 16},
                }
            }
        }
    ).specialists["toy"]
    fine_tune(spec, toy_rows(), tmp_path / "run", progress=False)
    adapter = tmp_path / "run" / "model"
    files = {p.name: p.stat().st_size for p in adapter.iterdir()}
    assert set(files) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "classifier_head.safetensors",
        "fleet.json",
    }
    assert sum(files.values()) < 1_000_000  # the thin layer: no base weights
    meta = json.loads((adapter / "fleet.json").read_text())
    assert meta["base_model"] == "minilm-l6" and len(meta["base_digest"]) == 24

    texts = [*toy_rows()["text"].tolist()[:30], "something else entirely"]
    export = merged(adapter, tmp_path / "merged", texts)
    assert export.max_difference < 1e-5 and export.size_bytes > 80_000_000  # the merged copy carries the base
    a = TextClassifier(adapter).predict_proba(texts)
    b = TextClassifier(tmp_path / "merged").predict_proba(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.usefixtures("prefect_harness")
def test_versions_hold_no_base_weights_and_the_base_is_stored_once(tmp_path, fleet_home):
    import mlflow
    from mlflow import MlflowClient

    from fleet.core.settings import Settings
    from fleet.models import base_store
    from flows.fleet_run import fleet_flow

    second = "\n  toy2:\n    data: {source: toy.csv}\n    labels: {weather: about the weather, food: about food}\n"
    rows = fleet_flow(fleet_file=str(write_toy_fleet(tmp_path / "f", extra_specialists=second)))
    assert {r.status for r in rows} == {"trained"}
    client = MlflowClient()

    def files(run_id: str, path: str = "") -> list:
        out = []
        for f in client.list_artifacts(run_id, path):
            out += files(run_id, f.path) if f.is_dir else [(f.path, f.file_size)]
        return out

    for name in ("toy", "toy2"):
        version = client.get_model_version(name, "1")
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / name)))
        logged = files(version.run_id) + [
            (str(p.relative_to(local)), p.stat().st_size) for p in local.rglob("*") if p.is_file()
        ]
        assert not any(Path(p).name == "model.safetensors" for p, _ in logged), logged  # no base weights
        assert any(p.endswith("artifacts/model/adapter_model.safetensors") for p, _ in logged), logged
        assert not any(p.endswith(".pkl") for p, _ in logged) and any(p.endswith(".py") for p, _ in logged)
        assert sum(size for _, size in logged) < 5_000_000
    [base_run] = client.search_runs([client.get_experiment_by_name("fleet-bases").experiment_id])
    store = Settings.load().store_handle()
    assert [k for k in store.list("bases") if k.endswith("manifest.json")] == [
        f"bases/{base_run.data.tags['base_digest']}/manifest.json"
    ]  # one base for both specialists
    assert not list((fleet_home / "runs" / "toy").glob("*/checkpoints"))  # stored: checkpoints are gone

    model = mlflow.pyfunc.load_model("models:/toy@champion")
    assert model.predict(["Snow is falling in Madrid"])["label"].tolist() == ["weather"]
    meta = json.loads(next(Path(mlflow.artifacts.download_artifacts("models:/toy/1")).rglob("fleet.json")).read_text())
    # a machine without the package alias or the object store gets the base from MLflow, once
    folder = base_store.locate("not-installed-here", meta["base_digest"], fallback=meta["base_uri"])
    assert base_store.folder_digest(folder) == meta["base_digest"] and "by-digest" in folder


def test_gathered_mixed_batches_match_peft_per_adapter_loop():
    """fleet.models.mixed_lora gives the answer of peft's own loop over adapters, for every row's adapter
    (different ranks, the bare base), and each row's adapter does change its answer; on an int8 base it
    stays as close to the float answer as peft's loop on that base does."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from fleet.models import cache, mixed_lora
    from fleet.models.base_models import resolve_base_model

    tokenizer, encoder = cache.encoder(resolve_base_model("minilm-l6"))
    texts = [f"{t} in {p}" for t in ("rain", "bread", "wind", "soup") for p in PLACES[:4]]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    names = [["a0", "a1", "a2", "__base__"][i % 4] for i in range(len(texts))]
    torch.manual_seed(0)
    model = None
    for i, rank in enumerate((8, 4, 8)):
        config = LoraConfig(r=rank, lora_alpha=16, target_modules=["query", "key", "value"], init_lora_weights=False)
        if model is None:
            model = get_peft_model(copy.deepcopy(encoder), config, adapter_name="a0")
        else:
            model.add_adapter(f"a{i}", config)
    model.eval()
    one = ["a1"] * len(texts)  # one adapter for the whole batch takes a shorter way
    with torch.inference_mode():
        looped = model(**enc, adapter_names=names).last_hidden_state
        looped_one = model(**enc, adapter_names=one).last_hidden_state
        bare = model(**enc, adapter_names=["__base__"] * len(texts)).last_hidden_state
        gathered = mixed_lora.install(model)(**enc, adapter_names=names).last_hidden_state
        gathered_one = model(**enc, adapter_names=one).last_hidden_state
        direct = mixed_lora.forward(model, names, **enc).last_hidden_state  # the serving groups' way, no hooks
    assert torch.allclose(gathered, looped, atol=1e-5), (gathered - looped).abs().max()
    assert torch.allclose(gathered_one, looped_one, atol=1e-5), (gathered_one - looped_one).abs().max()
    assert torch.equal(direct, gathered)
    assert all(layer._fleet_rows is None for layer in model._fleet_lora_layers)  # rows do not stay set
    changed = (looped - bare).abs().amax(dim=(1, 2))
    assert all((changed[i] > 1e-3) == (n != "__base__") for i, n in enumerate(names))
    _int8_as_close_as_peft(model, enc, names, looped)


def _int8_as_close_as_peft(model, enc, names, float_answer) -> None:
    """On an int8 base, activations are quantized with one scale per batch, so a difference in the last bit
    of one row's LoRA product moves every row by a quantization step or more: the gathered answer is not
    peft's to 1e-5 there, and is checked against the float answer instead, as closely as peft's loop."""
    import torch
    from torch.nn.functional import cosine_similarity

    from fleet.models import mixed_lora
    from fleet.models.adapter_group import _quantize_base

    _quantize_base(model)
    with torch.inference_mode():
        looped = model(**enc, adapter_names=names).last_hidden_state
        gathered = mixed_lora.forward(model, names, **enc).last_hidden_state
        shuffled = mixed_lora.forward(model, names[1:] + names[:1], **enc).last_hidden_state  # wrong adapters
    ours, peft_s = (cosine_similarity(x.flatten(1), float_answer.flatten(1)) for x in (gathered, looped))
    wrong = cosine_similarity(shuffled.flatten(1), float_answer.flatten(1))
    assert (ours > 0.85).all() and (ours > peft_s - 0.05).all(), (ours, peft_s)
    assert (wrong < ours - 0.1).all(), (wrong, ours)  # each row's own adapter is what brings it close
