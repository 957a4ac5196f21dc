"""Runs where its users are (issue 30): a base the default engine cannot convert is refused before anything
runs, and without llama-cpp-python (the `gguf` extra) a generative specialist answers through transformers,
which `fleet validate` says in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest


def test_a_base_the_llama_cpp_engine_cannot_convert_is_refused_before_anything_runs(tmp_path, fleet_home):
    """A Qwen2 base with the default engine (llama.cpp) used to be refused only after curation and training;
    `fleet validate` (and so `fleet run`) now names the architectures it converts and the way out."""
    from typer.testing import CliRunner

    from cli.main import app
    from conftest import write_toy_generation

    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    path = write_toy_generation(tmp_path / "f")
    path.write_text(
        path.read_text().replace("    task: text-generation\n", f"    task: text-generation\n    base_model: {qwen}\n")
    )
    result = CliRunner().invoke(app, ["validate", "--fleet", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = " ".join(result.output.split())
    assert "is a qwen2 model" in line and "Llama-family" in line and "engine: transformers" in line, line
    assert not (fleet_home / "runs").exists() or not any((fleet_home / "runs").iterdir())  # nothing ran


def test_without_llama_cpp_a_generative_specialist_answers_through_transformers(tmp_path, monkeypatch):
    from conftest import write_toy_generation
    from fleet.kinds import kind_of, load_fleet
    from fleet.models import llama_engine

    spec = load_fleet(write_toy_generation(tmp_path / "f")).specialists["extract"]
    assert llama_engine.usable("llama-cpp") == "llama-cpp" and kind_of(spec).check_base(spec) == []
    monkeypatch.setattr(llama_engine, "available", lambda: False)
    assert llama_engine.usable("llama-cpp") == "transformers" and llama_engine.usable("transformers") == "transformers"
    [note] = kind_of(spec).check_base(spec)
    assert "llama-cpp-python is not installed" in note and "engine: transformers" in note and "gguf" in note


def test_llama_cpp_is_an_extra_not_a_requirement():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.startswith("llama-cpp-python")]
    assert project["optional-dependencies"]["gguf"] == ["llama-cpp-python==0.3.36"]


def test_one_place_chooses_device_and_precision_with_the_capability_faked():
    from fleet.models.device import Capability, choose

    h100 = choose(Capability(cuda=True, cuda_bf16=True, name="NVIDIA H100"))
    assert (h100.device, h100.dtype, h100.gpu, h100.pipeline_device) == ("cuda", "bf16", True, 0)
    assert h100.training_flags() == {"use_cpu": False, "bf16": True, "fp16": False}
    t4 = choose(Capability(cuda=True, cuda_bf16=False, name="Tesla T4"))  # no bf16: fp16 with a grad scaler
    assert t4.dtype == "fp16" and t4.training_flags() == {"use_cpu": False, "bf16": False, "fp16": True}
    mac = choose(Capability(mps=True, name="mps"))
    assert (mac.device, mac.dtype, mac.pipeline_device, mac.gpu) == ("mps", "fp32", "mps", True)
    cpu = choose(Capability())
    assert (cpu.device, cpu.dtype, cpu.pipeline_device, cpu.gpu, cpu.name) == ("cpu", "fp32", -1, False, "cpu")
    assert cpu.training_flags() == {"use_cpu": True, "bf16": False, "fp16": False}


def test_training_evaluation_and_predictors_ask_the_one_place(tmp_path, monkeypatch):
    from fleet.core.sections import TrainSpec
    from fleet.models import device, trainer

    assert device.current() == device.choose(device.Capability())  # these machines: the CPU
    args = trainer.training_args(TrainSpec(), tmp_path, 10, False)
    assert args.use_cpu and not args.bf16 and not args.fp16
    assert trainer.environment(2)["device"] == "cpu"  # a version's environment tag, as before
    monkeypatch.setattr(device, "current", lambda: device.choose(device.Capability(cuda=True, name="NVIDIA T4")))
    assert trainer.environment(2)["device"] == "NVIDIA T4"
    import pandas as pd

    from fleet.stages import evaluation

    seen = []

    def measure(predict, texts, spec, on_gpu):  # what evaluation asks the timing to price
        seen.append(on_gpu)
        raise StopIteration

    monkeypatch.setattr(evaluation, "measure", measure)
    with pytest.raises(StopIteration):
        stand_in = SimpleNamespace(predict=lambda texts: texts, evaluation=None)
        evaluation.contender(None, stand_in, "challenger", stand_in, pd.DataFrame({"text": ["x"]}))  # type: ignore[arg-type]
    assert seen == [True]  # on a GPU, a measured second costs price_per_gpu_hour


def test_llama_cpp_builds_for_a_backend_named_by_one_make_variable():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    for backend, flag in (("cpu", "-DGGML_AVX2=ON"), ("cuda", "-DGGML_CUDA=ON"), ("metal", "-DGGML_METAL=ON")):
        assert re.search(rf"^LLAMA_CMAKE_{backend} +:= .*{flag}", makefile, re.M), backend
    assert "LLAMA_BACKEND ?= cpu" in makefile
    dockerfile = (Path(__file__).parents[1] / "infra" / "Dockerfile").read_text()
    assert "ARG LLAMA_BACKEND=cpu" in dockerfile and "-DGGML_CUDA=ON" in dockerfile
