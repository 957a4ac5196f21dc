"""Which work queue a specialist's deployment runs go to (issue 31, item 4): the GPU queue when the fleet
file says `compute: gpu`, or when `compute: auto` and its base's weights are too heavy for a CPU."""

from __future__ import annotations

import pytest

from fleet.core.settings import Settings


def test_a_specialist_goes_to_the_gpu_queue_when_asked_or_when_its_base_is_too_heavy_for_a_cpu(tmp_path, monkeypatch):
    from fleet.models import base_models
    from tasks.specialist import work_queue

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_CPU_MAX_BASE_GB", "1.5")
    settings = Settings.load()
    heavy = tmp_path / "heavy-base"
    heavy.mkdir()
    (heavy / "config.json").write_text('{"model_type": "llama"}')
    with (heavy / "model.safetensors").open("wb") as f:  # 2 GB of weights, sparse on disk
        f.truncate(2_000_000_000)
    assert base_models.weights_gb(str(heavy)) == pytest.approx(2.0)

    class Spec:  # the two fields work_queue reads
        name = "x"

        def __init__(self, base_model: str, compute: str):
            self.base_model, self.compute = base_model, compute

    monkeypatch.setattr("tasks.specialist.get_run_logger", lambda: __import__("logging").getLogger("test"))
    assert work_queue(Spec(str(heavy), "auto"), settings) == "gpu"
    assert work_queue(Spec("minilm-l6", "auto"), settings) is None  # 0.09 GB: the CPU queue
    assert work_queue(Spec("org/not-downloaded", "auto"), settings) is None  # size unknown: not guessed
    assert work_queue(Spec("minilm-l6", "gpu"), settings) == "gpu"
    assert work_queue(Spec(str(heavy), "cpu"), settings) is None  # said so: kept
