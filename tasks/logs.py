"""The library's log lines in the Prefect run: every ``searchr3.*`` INFO record a task emits reaches the run's logs.

``PREFECT_LOGGING_EXTRA_LOGGERS=searchr3`` (set by the Makefile and the deployments' job variables) gives the
``searchr3`` logger Prefect's API handler, but not a level: the logger inherits the root's WARNING, so INFO
lines (resuming from a checkpoint, what is evaluated) were dropped before any handler saw them.
:func:`route_library_logs` sets the level and attaches the handler itself, so it works however the flow was
started (worker, ``python -m flows.nightly``, a test) and whatever the environment says. Records outside a
flow or task run are ignored by the API handler (they still reach the console through the root logger).
"""
from __future__ import annotations

import logging

LIBRARY_LOGGER = "searchr3"


def route_library_logs(level: int = logging.INFO) -> logging.Logger:
    """Make ``searchr3.*`` records of ``level`` and above reach Prefect's API log handler (idempotent)."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger(LIBRARY_LOGGER)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_in_a_run)
        logger.addHandler(handler)
    return logger


def _in_a_run(record: logging.LogRecord) -> bool:
    """Only records emitted inside a flow or task run go to the API (others would only raise a warning)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
