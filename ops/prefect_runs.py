"""Flow runs of the local work pool as the operator sees them: stop them cleanly, crash the ones left behind, report.

Why this exists: when the worker process is stopped (SIGTERM, ``make prefect-down`` before this module, a reboot),
Prefect's process worker kills the flow-run process without letting it report, so the run stays *Running* for ever
and, with the pool's concurrency limit of 1, blocks every later run. Two remedies, both here:

- :func:`terminate_runs` sends SIGTERM to each running flow-run process of the pool *before* the worker is
  stopped. Prefect's engine turns that signal into a *Crashed* state (its SIGTERM bridge), reports it, releases
  the concurrency slots and exits; the stages' checkpoints let the next run resume.
- :func:`sweep` finds runs left *Running*, *Pending* or *Cancelling* whose process is gone (a worker killed
  hard, a machine that rebooted) and forces them to *Crashed* (*Cancelled* for a run that was being cancelled),
  which frees their slots. ``make prefect-up`` and ``make prefect-worker-restart`` sweep before the worker starts;
  ``make prefect-recover`` sweeps alone.

A run's process is the ``infrastructure_pid`` the process worker records (``PID`` or ``HOST:PID``); a run on
another host is never touched. :func:`status` gathers what ``make prefect-status`` prints.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import time

ACTIVE_STATES = ("RUNNING", "PENDING", "CANCELLING")


def api_settings(api_url: str | None):
    """Prefect settings pointing at ``api_url`` (unchanged when None)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: api_url}) if api_url else temporary_settings({})


@contextlib.contextmanager
def api_client(api_url: str | None = None):
    from prefect.client.orchestration import get_client

    with api_settings(api_url), get_client(sync_client=True) as client:
        yield client


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace").read()
    except OSError:
        return True  # no /proc: trust the signal
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def local_pid(infrastructure_pid: str | None) -> int | None:
    """The pid of a run's process when it runs on this host (``"1234"`` or ``"thishost:1234"``), else None."""
    if not infrastructure_pid:
        return None
    host, _, pid = str(infrastructure_pid).rpartition(":")
    if host and host != socket.gethostname():
        return None
    return int(pid) if pid.isdigit() else None


def active_runs(pool: str, api_url: str | None = None) -> list:
    """Flow runs of work pool ``pool`` in a non-final, started state (Running, Pending, Cancelling)."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType

    with api_client(api_url) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType[name] for name in ACTIVE_STATES]))),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))


def is_stuck(run, worker_alive: bool) -> bool:
    """A run nothing will ever finish: its local process is gone, or it has none and no worker is alive.

    A run whose process lives on another host is never stuck for us (its own worker reports it)."""
    pid = local_pid(run.infrastructure_pid)
    if pid is not None:
        return not process_alive(pid)
    remote = bool(run.infrastructure_pid) and pid is None
    return not remote and not worker_alive


def describe(run) -> str:
    since = run.state.timestamp.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if run.state else "?"
    state = run.state.name if run.state else "?"
    return f"{run.name} ({run.id}) {state} since {since}, process {run.infrastructure_pid}"


def terminate_runs(pool: str, api_url: str | None = None, timeout_s: float = 60, echo=print) -> list[str]:
    """SIGTERM every live local flow-run process of ``pool`` and wait (``timeout_s``) for each to exit.

    Prefect's engine turns the signal into a Crashed state and reports it before exiting. Returns the runs'
    names."""
    stopped = []
    for run in active_runs(pool, api_url):
        pid = local_pid(run.infrastructure_pid)
        if pid is None or not process_alive(pid):
            continue
        echo(f"interrupting flow run {run.name} (pid {pid}): it will end Crashed and the next run resumes "
             "from its checkpoints")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        stopped.append((run, pid))
    deadline = time.monotonic() + timeout_s
    for _, pid in stopped:
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return [run.name for run, _ in stopped]


def sweep(pool: str, api_url: str | None = None, worker_alive: bool = False, echo=print) -> list[str]:
    """Force every stuck run of ``pool`` (:func:`is_stuck`) to Crashed (Cancelled if it was Cancelling).

    Returns the runs' names. Forcing a final state releases the pool's and the deployment's concurrency slots."""
    from prefect.states import Cancelled, Crashed

    swept = []
    with api_client(api_url) as client:
        for run in active_runs(pool, api_url):
            if not is_stuck(run, worker_alive):
                continue
            was = run.state.name if run.state else "?"
            why = (f"left {was} by a worker that is gone (process {run.infrastructure_pid or 'never started'}); "
                   "ended by the searchr3 startup sweep")
            state = Cancelled(message=why) if run.state and run.state.type.value == "CANCELLING" else Crashed(
                message=why)
            client.set_flow_run_state(run.id, state, force=True)
            echo(f"swept flow run {run.name} ({run.id}): {was} -> {state.name}")
            swept.append(run.name)
    return swept


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    return f"{seconds} s ago" if seconds >= 0 else f"in {_span(-seconds)}"


def _span(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def status(pool: str, api_url: str | None = None, worker_alive: bool = False) -> dict:
    """Pool, workers, deployments, the next scheduled run, active and stuck runs, as plain data (times in UTC)."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState,
                                                FlowRunFilterStateType, WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    now = dt.datetime.now(dt.timezone.utc)
    out: dict = {"pool": None, "workers": [], "deployments": [], "next_run": None, "active": [], "stuck": []}
    with api_client(api_url) as client:
        try:
            wp = client.read_work_pool(pool)
        except ObjectNotFound:
            return out
        out["pool"] = {"name": wp.name, "type": wp.type, "concurrency_limit": wp.concurrency_limit,
                       "paused": wp.is_paused, "status": getattr(wp.status, "value", wp.status)}
        out["workers"] = [{"name": w.name, "status": getattr(w.status, "value", w.status),
                           "last_heartbeat": _ago(w.last_heartbeat_time, now)}
                          for w in client.read_workers_for_work_pool(pool)]
        deployments = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        flows = {d.flow_id: client.read_flow(d.flow_id).name for d in deployments}
        names = {d.id: f"{flows[d.flow_id]}/{d.name}" for d in deployments}
        for d in deployments:
            schedules = [f"cron {s.schedule.cron} ({s.schedule.timezone or 'UTC'})" if hasattr(s.schedule, "cron")
                         else str(s.schedule) for s in d.schedules if s.active]
            limit = d.global_concurrency_limit.limit if d.global_concurrency_limit else None
            out["deployments"].append({"name": names[d.id], "paused": d.paused, "schedules": schedules,
                                       "concurrency_limit": limit, "parameters": d.parameters})
        if deployments:
            upcoming = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[d.id for d in deployments]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
            if upcoming:
                run = upcoming[0]
                when = run.expected_start_time or run.next_scheduled_start_time
                out["next_run"] = {"deployment": names.get(run.deployment_id), "name": run.name,
                                   "state": run.state.name if run.state else None,
                                   "at": when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
                                   if when else None, "in": _ago(when, now) if when else None}
    for run in active_runs(pool, api_url):
        entry = {"name": run.name, "id": str(run.id), "state": run.state.name if run.state else None,
                 "process": run.infrastructure_pid, "describe": describe(run)}
        out["stuck" if is_stuck(run, worker_alive) else "active"].append(entry)
    return out
