"""Which failures a task retries: transient I/O only (a full disk, a network file system hiccup, a timeout).

Bad data (``ValidationFailed``, ``DataError``), bad configuration (``ValueError``) and bugs fail at once:
retrying them would only repeat the same failure. ``OSError`` subclasses that describe a state of the
file system rather than a hiccup (a missing file, a permission) are not retried either.
"""
from __future__ import annotations

PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, PERMANENT_OS_ERRORS)


def retry_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is :func:`is_transient`."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state holds whatever the task raised
        return is_transient(exc)
    return False


# Keyword arguments shared by every stage task: two retries (after 10 s, then 60 s) on transient errors.
# Stages write atomically and checkpoints resume, so a retry continues where the failed try stopped.
# No Prefect caching: DVC decides what is up to date, and stage outputs are files, not task results.
RETRIES = {"retries": 2, "retry_delay_seconds": [10, 60], "retry_condition_fn": retry_transient}
