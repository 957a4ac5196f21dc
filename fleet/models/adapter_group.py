"""A base model loaded once with the adapters of every specialist built on it, answering mixed batches.

Each kind says how its group answers (``SpecialistKind.serving_group``); this module holds what they share.

peft keeps one set of LoRA weights per adapter name and, given ``adapter_names`` (one per row), runs
each row through its own adapter within a single forward pass (LoRAX's idea, on CPU here; each row
gathers its adapter's matrices, ``fleet.models.mixed_lora``). A classifier's head is applied per row
afterwards (specialists have different label sets, so their heads cannot be stacked); a generative specialist's rows are generated together, each with its own adapter.
The ``int8`` variant of an encoder group quantizes the base's linear layers (torch dynamic
quantization) and keeps the adapters in float32 on top, so specialists still batch together.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from fleet.core.records import ModelRecord
from fleet.core.results import Outputs
from fleet.models import base_models, cache, mixed_lora


def _quantize_base(model: Any) -> None:
    """int8 dynamic quantization of every linear layer that is not part of an adapter, with a scale per
    output channel of the weights (one per tensor changed sms-spam's label on 5 of 499 test rows, one per
    channel on 2, at the same speed)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    spec = {
        n: per_channel_dynamic_qconfig
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lora_" not in n
    }
    torch.ao.quantization.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)


R = TypeVar("R", bound=ModelRecord)


class AdapterGroup(Generic[R]):
    """One base, many adapters; ``answer`` takes ``(specialist, text)`` rows and answers them in one batch.

    A specialist is routed to its adapter when its rows are batched, not when they arrive; a replaced
    adapter is kept (retired) until ``sweep`` unloads it, so no queued row ever lacks its adapter.
    ``record_type``: the kind's ``fleet.json`` class, read for every adapter added."""

    record_type: type[R]

    def __init__(self, base_folder: str, int8: bool = False):
        base_models.ml_imports()
        self.base_folder, self.int8 = base_folder, int8
        self.model: Any = None
        self.meta: dict[str, R] = {}  # adapter -> its fleet.json
        self.dirs: dict[str, Path] = {}  # adapter -> its folder
        self.routes: dict[str, tuple[str, str]] = {}  # specialist -> (adapter, version)
        self.retired: dict[str, tuple[str, str, float]] = {}  # specialist -> (adapter, version, since)
        self.lock = threading.Lock()  # adapters and routes change only between batches

    def _base(self) -> Any:
        raise NotImplementedError

    def add(self, name: str, model_dir: Path) -> None:
        """Load an adapter next to the others; it is recorded only once it loaded (a broken one leaves the
        group as it was)."""
        folder = Path(model_dir)
        with self.lock:
            record = self.record_type.read(folder)
            if self.model is None or self.int8:
                self.model = self._build({**self.dirs, name: folder})
            else:
                with cache.RNG:
                    self.model.load_adapter(str(folder), adapter_name=name)
            try:
                self._added(name, folder)
            except Exception:  # the head or settings would not load: back to the adapters that did
                self.model = self._build(self.dirs) if self.dirs else None
                raise
            self.dirs[name], self.meta[name] = folder, record

    def _build(self, dirs: dict[str, Path]) -> Any:
        """A fresh copy of the base with the adapters in ``dirs``; int8: quantized after attaching them, since
        peft cannot attach an adapter to a quantized layer (so an int8 group is rebuilt when adapters change)."""
        from peft import PeftModel

        (first, folder), *rest = dirs.items()
        with cache.RNG:  # building modules draws random numbers: not while a fine-tune runs
            model = PeftModel.from_pretrained(self._base(), str(folder), adapter_name=first).eval()
            for name, more in rest:
                model.load_adapter(str(more), adapter_name=name)
        mixed_lora.install(model)  # a mixed batch in two products per layer, not one pass per adapter
        if self.int8:
            _quantize_base(model)
        return model

    def _added(self, name: str, model_dir: Path) -> None:
        pass

    def route(self, specialist: str, adapter: str, version: str) -> None:
        """Send ``specialist``'s next batches to ``adapter`` (its previous adapter is retired)."""
        with self.lock:
            if specialist in self.routes and self.routes[specialist][0] != adapter:
                self.retired[specialist] = (*self.routes[specialist], time.monotonic())
            self.routes[specialist] = (adapter, version)

    def unroute(self, specialist: str) -> None:
        """``specialist`` moved to another group: retire its adapter here."""
        with self.lock:
            if specialist in self.routes:
                self.retired[specialist] = (*self.routes.pop(specialist), time.monotonic())

    def sweep(self, older_than_s: float) -> None:
        """Unload adapters retired more than ``older_than_s`` ago."""
        with self.lock:
            for specialist, (adapter, _, since) in list(self.retired.items()):
                if time.monotonic() - since > older_than_s and len(self.dirs) > 1:
                    del self.retired[specialist]
                    del self.dirs[adapter]
                    self._unload(adapter)
                    self.meta.pop(adapter, None)

    def _unload(self, adapter: str) -> None:
        """Free a retired adapter (its folder and record are already out of ``dirs``; ``meta`` still has it)."""
        if self.int8:
            self.model = self._build(self.dirs)
        else:
            self.model.delete_adapter(adapter)

    def _adapter(self, specialist: str) -> tuple[str, str]:
        if specialist in self.routes:
            return self.routes[specialist]
        adapter, version, _ = self.retired[specialist]
        return adapter, version

    def answer(self, rows: list[tuple[str, str]]) -> list[tuple[Outputs, str]]:
        """Each row's answer and the version that gave it."""
        with self.lock:
            routed = [self._adapter(s) for s, _ in rows]
            outputs = self.run([(a, t) for (a, _), (_, t) in zip(routed, rows)])
        return list(zip(outputs, [v for _, v in routed]))

    def run(self, rows: list[tuple[str, str]]) -> list[Outputs]:
        raise NotImplementedError
