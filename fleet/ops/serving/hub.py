"""The served champions: which version of each specialist answers, on which loaded base.

At start, and every ``reload_s`` seconds after, the hub reads each specialist's ``champion`` alias from
MLflow. A new champion's adapter is fetched and loaded next to the old one on the same base; then the
specialist is switched to it (under the group's lock, between batches) and the old adapter unloaded.
Requests already batched finish on the old version, later ones get the new one; none fails.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fleet.core.records import ModelRecord
from fleet.kinds import kind_of
from fleet.kinds.base import SpecialistKind
from fleet.models import base_store
from fleet.models.adapter_group import AdapterGroup
from fleet.ops import escalation
from fleet.stages import registry

log = logging.getLogger("fleet.ops.serving")
RETRY_BROKEN_S = 300.0  # a champion that failed to load is tried again after this long, not at every refresh


@dataclass
class Served:
    name: str
    version: str
    group: AdapterGroup
    kind: SpecialistKind
    int8: bool
    threshold: float | None = None  # the version's cascade threshold (raw confidence), when it has one


class Hub:
    def __init__(self, cache: Path, names: list[str] | None = None, int8: str = "auto"):
        """``cache``: where champions' adapters are fetched to; ``names``: the specialists to serve (all: None)."""
        self.names, self.int8, self.cache = names, int8, Path(cache)
        self.served: dict[str, Served] = {}
        self.groups: dict[tuple, AdapterGroup] = {}
        self.reloads = 0
        self.broken: dict[tuple[str, str], float] = {}  # (specialist, version) that failed to load -> retry after
        self.withdrawn: dict[str, str] = {}  # specialist to serve that has no champion -> why (answers 503)
        self._lock = threading.Lock()

    def _group(self, kind: SpecialistKind, base_folder: str, int8: bool) -> AdapterGroup:
        key = (kind.task, base_folder, int8)
        if key not in self.groups:
            self.groups[key] = kind.serving_group(base_folder, int8)
        return self.groups[key]

    def _load(self, name: str, version) -> Served:
        """Fetch the version's adapter and load it on its base's group (not yet routed)."""
        folder = Path(registry.download_model_dir(name, str(version.version), self.cache / name / str(version.version)))
        record = ModelRecord.read(folder)
        base = base_store.locate_for(record)
        kind = kind_of(record.task)
        int8 = self.int8 == "auto" and kind.int8_served(version.tags or {})
        group = self._group(kind, base, int8)
        group.add(f"{name}-v{version.version}", folder)
        return Served(name, str(version.version), group, kind, int8, escalation.threshold_of(version.tags or {}))

    def _switch(self, name: str, version) -> str:
        current = self.served.get(name)
        fresh = self._load(name, version)
        fresh.group.route(name, f"{name}-v{fresh.version}", fresh.version)
        if current is not None and current.group is not fresh.group:
            current.group.unroute(name)
        self.served[name] = fresh
        self.reloads += current is not None
        return f"{name} v{current.version if current else '-'} -> v{fresh.version}"

    def _withdraw(self, name: str, current: Served | None) -> None:
        """No ``champion`` alias: the specialist stops answering (a kill switch), saying why."""
        if current is not None:
            current.group.unroute(name)
            del self.served[name]
            log.warning("%s: the champion alias was removed; v%s is no longer served", name, current.version)
            self.withdrawn[name] = f"its champion alias was removed (v{current.version} is no longer served)"
        else:
            self.withdrawn.setdefault(name, "it has no champion in the registry")

    def refresh(self, retire_after_s: float = 2.0) -> list[str]:
        """Load new champions and route to them; unload adapters retired earlier. Returns what changed."""
        changed = []
        with self._lock:
            for group in self.groups.values():
                group.sweep(retire_after_s)
            numbers = registry.champion_numbers()  # one listing: checking 32 champions one by one held
            for name in self.names if self.names is not None else list(numbers):  # the GIL for 0.1-0.2 s
                current, number = self.served.get(name), numbers.get(name)
                if number is None:
                    self._withdraw(name, current)
                    continue
                if current is not None and current.version == number:
                    continue
                if time.monotonic() >= self.broken.get((name, number), 0.0):
                    try:
                        changed.append(self._switch(name, registry.client().get_model_version(name, number)))
                        self.withdrawn.pop(name, None)
                    except Exception as exc:  # one broken champion: the others still load and serve
                        self.broken[(name, number)] = time.monotonic() + RETRY_BROKEN_S
                        log.error("%s v%s not served (the version before it, if any, still is): %s", name, number, exc)
        for line in changed:
            log.info("serving %s", line)
        return changed

    def watch(self, every_s: float, stop: threading.Event) -> None:
        """Refresh every ``every_s`` seconds until ``stop`` is set (a failed refresh is logged and retried)."""
        while not stop.wait(every_s):
            try:
                self.refresh()
            except Exception as exc:  # a registry hiccup must not stop serving the loaded champions
                log.warning("champion refresh failed (serving what is loaded): %s", exc)
