"""Moving the champion by hand: promotion and rollback, both recorded in the champion history.

Both hold the specialist's register lease (``register/NAME``, as a registration does), so no two alias moves
interleave and the champion history is read and written by one holder at a time.
"""

from __future__ import annotations

import time

from mlflow.exceptions import MlflowException

from fleet.core.storage import ObjectStore
from fleet.stages.registry import (
    RegistryError,
    champion_lease,
    champion_version,
    client,
    history,
    move_champion,
    registered_names,
)


def require_model(name: str) -> None:
    try:
        client().get_registered_model(name)
    except MlflowException:
        known = ", ".join(registered_names()) or "none"
        raise RegistryError(f"no specialist {name!r} in the registry (known: {known})") from None


def require_version(name: str, version: str):
    require_model(name)
    try:
        return client().get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client().search_model_versions(f"name='{name}'"))
        raise RegistryError(
            f"{name}: no version {version!r} (versions: {', '.join(map(str, versions)) or 'none'})"
        ) from None


def promote(store: ObjectStore, name: str, version: str, reason: str = "manual promotion") -> str:
    """Make ``version`` the champion by hand (recorded in the history and on the version)."""
    require_version(name, version)
    with champion_lease(store, name) as lease:
        lease.check()
        client().set_model_version_tag(name, str(version), "promoted_by", reason)
        move_champion(name, str(version), reason)
    return str(version)


def rolled_back_from(past: list[dict]) -> set[str]:
    """Versions the history says were rolled back from (entries written before the field: by their reason)."""
    out = set()
    for h in past:
        reason = str(h.get("reason", ""))
        source = h.get("rolled_back_from") or (reason.split()[-1] if reason.startswith("rollback from ") else None)
        if source:
            out.add(str(source))
    return out


def rollback_target(past: list[dict], current: str) -> str | None:
    """The newest earlier champion that was never rolled back from (and is not ``current``)."""
    barred = rolled_back_from(past) | {current}
    earlier = [str(h["version"]) for h in past if str(h["version"]) not in barred]
    return earlier[-1] if earlier else None


def rollback(store: ObjectStore, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion never rolled back from; returns (from, to). A second
    rollback walks further back (v3 -> v2 -> v1), never forward to the version just left."""
    require_model(name)
    with champion_lease(store, name) as lease:
        current = champion_version(name)
        if current is None:
            raise RegistryError(f"{name}: has no champion to roll back")
        target = rollback_target(history(name), str(current.version))
        if target is None:
            raise RegistryError(
                f"{name}: no earlier champion of version {current.version} that was not rolled back from; nothing "
                "to roll back to (promote a version by hand with `fleet promote`)"
            )
        require_version(name, target)
        lease.check()
        client().set_model_version_tag(name, str(current.version), "rolled_back", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        move_champion(name, target, f"rollback from {current.version}", rolled_back_from=str(current.version))
    return str(current.version), target
