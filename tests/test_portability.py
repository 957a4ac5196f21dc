"""Runs where its users are (issue 30): a base the default engine cannot convert is refused before anything
runs, and without llama-cpp-python (the `gguf` extra) a generative specialist answers through transformers,
which `fleet validate` says in one line."""

from __future__ import annotations

import json


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
