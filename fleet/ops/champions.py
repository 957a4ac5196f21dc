"""Moving the champion by hand: promotion and rollback, both recorded in the champion history."""

from __future__ import annotations

import time

from mlflow.exceptions import MlflowException

from fleet.stages.registry import RegistryError, champion_version, client, history, move_champion, registered_names


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


def promote(name: str, version: str, reason: str = "manual promotion") -> str:
    """Make ``version`` the champion by hand (recorded in the history and on the version)."""
    require_version(name, version)
    client().set_model_version_tag(name, str(version), "promoted_by", reason)
    move_champion(name, str(version), reason)
    return str(version)


def rollback(name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; returns (from, to)."""
    require_model(name)
    current = champion_version(name)
    if current is None:
        raise RegistryError(f"{name}: has no champion to roll back")
    previous = [h["version"] for h in history(name) if h["version"] != str(current.version)]
    if not previous:
        raise RegistryError(
            f"{name}: version {current.version} is the only champion it ever had; nothing to roll back to"
        )
    target = previous[-1]
    require_version(name, target)
    client().set_model_version_tag(name, str(current.version), "rolled_back", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    move_champion(name, target, f"rollback from {current.version}")
    return str(current.version), target
