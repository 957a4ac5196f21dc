"""How the ``fleet`` command reports errors: one clear line, a traceback only with ``--debug``.

The library's errors about input (a fleet file, a data file, settings, a server that does not answer)
carry a message that names what is wrong and where; the traceback adds nothing for the person who
ran the command, so it is shown only with ``fleet --debug``. Prefect logs a task's failure with its
traceback: the same filter drops the traceback from those records (the line stays).
"""

from __future__ import annotations

import logging
import os

DEBUG_VAR = "FLEET_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_VAR, "").lower() in ("1", "true", "yes")


def expected() -> tuple[type[BaseException], ...]:
    """The errors whose message is the whole story."""
    from fleet.core.leases import LeaseBusy
    from fleet.core.settings import SettingsError
    from fleet.core.spec import SpecError
    from fleet.core.storage import StorageError
    from fleet.data.sources import CurationError
    from fleet.models.base_models import TrainingError
    from fleet.ops.preflight import ServiceError
    from fleet.stages.registry import RegistryError

    return (
        CurationError,
        SpecError,
        TrainingError,
        RegistryError,
        StorageError,
        SettingsError,
        ServiceError,
        LeaseBusy,
    )


class QuietTracebacks(logging.Filter):
    """Drops the traceback from a log record about an expected error (the record itself stays)."""

    def __init__(self, kinds: tuple[type[BaseException], ...]):
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, self.kinds):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_prefect() -> None:
    """Install the filter on the loggers Prefect reports task and flow failures on (not with --debug)."""
    if debugging():
        return
    quiet = QuietTracebacks(expected())
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine", "prefect"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietTracebacks) for f in logger.filters):
            logger.addFilter(quiet)
