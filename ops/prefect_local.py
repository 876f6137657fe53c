"""A local Prefect server and process worker in the background, run so that nothing wedges.

Process supervision, not a flow (``flows/`` holds flows only). Each process runs in its own process group
(so SIGTERM reaches every process it started), with its pid in ``<home>/run/{server,worker}.pid`` and its
output in ``<home>/logs/{server,worker}.log``, where ``<home>`` is ``PREFECT_HOME`` (``.prefect/`` in the
repo, git-ignored). The work pool is created here too (``ensure_work_pool``); ``flows/deploy.py`` uses it.

Every action is idempotent and safe to repeat:

- ``up``: starts what is not running (server, then worker) and leaves alone what is; a healthy stack is
  reported and left untouched (exit 0). Before it starts a worker it sweeps runs left Running by a dead one
  (``ops.prefect_runs.sweep``), so a crash or reboot never blocks the next run.
- ``down``: interrupts running flow runs first (they end Crashed, reported, slots released; the next run
  resumes from checkpoints), then stops the worker, sweeps, then stops the server.
- ``worker-restart``: the same for the worker alone (the server keeps running), then starts a new worker.
- ``recover``: only the sweep (crashes runs whose process is gone; touches nothing alive).
- ``status``: server, worker, pool, deployments, next scheduled run, active and stuck runs; exit 1 when the
  stack is not fully up or a run is stuck.

    python -m ops.prefect_local up --port 4200 --pool searchr3
    python -m ops.prefect_local status
    python -m ops.prefect_local down
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ops.environment import find_tool, offline_env, tool_env
# api_settings is imported from here by flows.deploy
from ops.prefect_runs import api_client, api_settings, status, sweep, terminate_runs  # noqa: F401

DEFAULT_POOL = "searchr3"
# Logged by Prefect besides its own loggers (the library logs through `searchr3.*`).
LOGGING_ENV = {"PREFECT_LOGGING_EXTRA_LOGGERS": "searchr3"}


def job_env() -> dict[str, str]:
    """The variables a flow run gets from the worker (the deployments' job variables): offline, logging."""
    return {**offline_env(), **LOGGING_ENV}


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()


def api_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/api"


def prefect_cli() -> str:
    return find_tool("prefect")


def process_env(home: Path, url: str | None = None) -> dict[str, str]:
    return tool_env({**LOGGING_ENV, "PREFECT_HOME": str(home), **({"PREFECT_API_URL": url} if url else {})})


def ensure_work_pool(name: str = DEFAULT_POOL, concurrency_limit: int = 1, api_url: str | None = None) -> None:
    """Create the process work pool if missing, else set its concurrency limit when it differs (idempotent)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with api_client(api_url) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", concurrency_limit=concurrency_limit,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="searchr3 training: one flow run at a time"))
        else:
            if client.read_work_pool(name).concurrency_limit != concurrency_limit:
                client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGQUIT as a terminal gives them. A shell starts background jobs with
    both ignored, and an ignored signal stays ignored across exec, so a server or worker started from a script or
    cron job would never see Ctrl-C, nor would the flow runs it starts (Python raises KeyboardInterrupt only when
    SIGINT was not ignored at start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _spawn(name: str, argv: list[str], home: Path, env: dict[str, str]) -> subprocess.Popen:
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(parents=True, exist_ok=True)
    with open(home / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True,  # its own process group: killpg stops all it started
                                preexec_fn=_default_signals)
    (home / "run" / f"{name}.pid").write_text(str(proc.pid))
    return proc


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_server(home: Path, port: int, host: str = "127.0.0.1", ui: bool = True) -> subprocess.Popen:
    if not port_is_free(port, host):
        raise RuntimeError(f"port {port} on {host} is in use (another Prefect server?); pick one with PREFECT_PORT=")
    argv = [prefect_cli(), "server", "start", "--host", host, "--port", str(port), "--analytics-off",
            "--ui" if ui else "--no-ui"]
    return _spawn("server", argv, home, process_env(home))


def start_worker(home: Path, url: str, pool: str = DEFAULT_POOL,
                 query_seconds: float | None = None) -> subprocess.Popen:
    env = process_env(home, url)
    if query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    argv = [prefect_cli(), "worker", "start", "--pool", pool, "--type", "process", "--limit", "1",
            "--name", f"{pool}-local"]
    return _spawn("worker", argv, home, env)


def wait_healthy(url: str, timeout_s: float = 120, proc: subprocess.Popen | None = None) -> float:
    """Poll ``<url>/health`` until it answers 200; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {url} was not healthy after {timeout_s} s")


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our child
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(name: str, home: Path, timeout_s: float = 30) -> bool:
    """SIGTERM the process group in ``run/<name>.pid``, SIGKILL it after ``timeout_s``; True if one was running."""
    pidfile = home / "run" / f"{name}.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().strip())
    running = _alive(pid)
    if running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever is left of the group (or the group that would not stop)
    while _alive(pid):
        time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    return running


def running_pid(name: str, home: Path) -> int | None:
    """The pid in ``run/<name>.pid`` when that process is alive (a stale pid file is removed)."""
    pidfile = home / "run" / f"{name}.pid"
    if not pidfile.exists():
        return None
    text = pidfile.read_text().strip()
    if text.isdigit() and _alive(int(text)) and _is_prefect(int(text)):
        return int(text)
    pidfile.unlink(missing_ok=True)  # the process is gone (or, after a reboot, the pid belongs to another program)
    return None


def _is_prefect(pid: int) -> bool:
    """Whether ``pid`` runs the ``prefect`` command (True where /proc cannot tell)."""
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()


def is_healthy(url: str, timeout_s: float = 5) -> bool:
    with contextlib.suppress(OSError, urllib.error.URLError):
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    return False


def stop_worker(home: Path, url: str, pool: str = DEFAULT_POOL, echo=print) -> bool:
    """Interrupt the pool's running flow runs (they end Crashed), stop the worker, sweep; True if one was running.

    Without a healthy server the worker is only stopped (the sweep of the next ``up`` finishes the job)."""
    healthy = is_healthy(url)
    if healthy:
        terminate_runs(pool, url, echo=echo)
    was_running = stop("worker", home)
    if healthy:
        sweep(pool, url, worker_alive=False, echo=echo)
    return was_running


def down(home: Path, url: str | None = None, pool: str = DEFAULT_POOL) -> None:
    """Flow runs first (they end Crashed), then the worker, then the server; the CLI profile forgets the URL."""
    url = url or api_url(4200)
    print(f"worker: {'stopped' if stop_worker(home, url, pool) else 'was not running'}")
    print(f"server: {'stopped' if stop('server', home) else 'was not running'}")
    subprocess.run([prefect_cli(), "config", "unset", "PREFECT_API_URL", "-y"], env=process_env(home),
                   capture_output=True, check=False)


def _start_worker_after_sweep(home: Path, url: str, pool: str) -> None:
    swept = sweep(pool, url, worker_alive=False)
    print(f"sweep: {len(swept)} run(s) left behind by a dead worker crashed" if swept
          else "sweep: no run was left behind")
    start_worker(home, url, pool)
    print(f"worker: started, polling work pool {pool!r} (log {home / 'logs' / 'worker.log'})")


def up(home: Path, port: int, pool: str, ui: bool = True) -> str:
    """Start what is not running (server, pool, worker); leave a healthy stack untouched. Returns the API URL.

    Only what this call started is stopped if a later step fails."""
    url = api_url(port)
    started: list[str] = []
    try:
        server_pid = running_pid("server", home)
        if server_pid is not None:
            if not is_healthy(url):
                wait_healthy(url, timeout_s=60)  # it may still be starting
            print(f"server: already running (pid {server_pid}), healthy at {url}")
        else:
            server = start_server(home, port, ui=ui)
            started.append("server")
            took = wait_healthy(url, proc=server)
            print(f"server: {url} healthy after {took:.1f} s (log {home / 'logs' / 'server.log'})")
        # The CLI profile lives in PREFECT_HOME (.prefect/profiles.toml), so `prefect ...` commands find the server.
        subprocess.run([prefect_cli(), "config", "set", f"PREFECT_API_URL={url}"], env=process_env(home), check=True,
                       capture_output=True)
        ensure_work_pool(pool, api_url=url)
        worker_pid = running_pid("worker", home)
        if worker_pid is not None:
            print(f"worker: already running (pid {worker_pid})")
        else:
            started.append("worker")
            _start_worker_after_sweep(home, url, pool)
    except BaseException:
        for name in reversed(started):  # never what was running before this call
            stop(name, home)
        raise
    if not started:
        print("the stack is already up and healthy: nothing to do")
    else:
        print(f"then: make deploy; export PREFECT_API_URL={url}; "
              "prefect deployment run 'training-pipeline/manual' --param profile=tiny --watch")
    return url


def worker_restart(home: Path, port: int, pool: str) -> None:
    """Stop the worker (its running flow run ends Crashed), sweep, start a new one; the server is left running."""
    url = api_url(port)
    if running_pid("server", home) is None or not is_healthy(url):
        raise RuntimeError(f"no healthy Prefect server at {url}: `make prefect-up` starts the whole stack")
    print(f"worker: {'stopped' if stop_worker(home, url, pool) else 'was not running'}")
    _start_worker_after_sweep(home, url, pool)


def recover(home: Path, port: int, pool: str) -> int:
    """Crash the runs whose process is gone (and, with no worker alive, the runs no worker will pick up)."""
    url = api_url(port)
    if not is_healthy(url):
        print(f"no healthy Prefect server at {url}: `make prefect-up` starts it and sweeps")
        return 1
    swept = sweep(pool, url, worker_alive=running_pid("worker", home) is not None)
    print(f"recover: {len(swept)} stuck run(s) crashed" if swept else "recover: no stuck run")
    return 0


def print_status(home: Path, port: int, pool: str, as_json: bool = False) -> int:
    """What ``make prefect-status`` prints; 0 when server and worker are up and no run is stuck, else 1."""
    url = api_url(port)
    server_pid, worker_pid = running_pid("server", home), running_pid("worker", home)
    healthy = is_healthy(url)
    report: dict = {"server": {"url": url, "pid": server_pid, "healthy": healthy,
                               "log": str(home / "logs" / "server.log")},
                    "worker": {"pid": worker_pid, "alive": worker_pid is not None,
                               "log": str(home / "logs" / "worker.log")}}
    if healthy:
        report.update(status(pool, url, worker_alive=worker_pid is not None))
    ok = healthy and worker_pid is not None and bool(report.get("pool")) and not report.get("stuck")
    report["ok"] = ok
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if ok else 1
    server_line = (f"up, healthy at {url} (UI at {url[:-4]})" if healthy else
                   f"running (pid {server_pid}) but not answering at {url}" if server_pid else "down")
    print(f"server:      {server_line}" + (f", pid {server_pid}" if server_pid and healthy else "")
          + f"; log {report['server']['log']}")
    print(f"worker:      {'up, pid ' + str(worker_pid) if worker_pid else 'down'}; log {report['worker']['log']}")
    if not healthy:
        print("(pool, deployments and runs need the server: `make prefect-up`)")
        return 1
    wp = report["pool"]
    if wp is None:
        print(f"pool:        {pool!r} does not exist (`make prefect-up` creates it)")
    else:
        heartbeats = ", ".join(f"{w['name']} {w['status']} (heartbeat {w['last_heartbeat']})"
                               for w in report["workers"]) or "no worker has polled it"
        print(f"pool:        {wp['name']} ({wp['type']}), concurrency limit {wp['concurrency_limit']}, "
              f"{'PAUSED, ' if wp['paused'] else ''}status {wp['status']}; workers: {heartbeats}")
    for d in report["deployments"]:
        when = ", ".join(d["schedules"]) or "no schedule (run by hand)"
        print(f"deployment:  {d['name']}: {when}{', PAUSED' if d['paused'] else ''}, "
              f"concurrency {d['concurrency_limit']}, parameters {json.dumps(d['parameters'])}")
    if not report["deployments"]:
        print("deployment:  none (`make deploy`)")
    nxt = report["next_run"]
    print(f"next run:    {nxt['deployment']} at {nxt['at']} ({nxt['in']}), {nxt['state']}" if nxt
          else "next run:    none")
    for r in report["active"]:
        print(f"running:     {r['describe']}")
    if not report["active"]:
        print("running:     none")
    for r in report["stuck"]:
        print(f"STUCK:       {r['describe']}: `make prefect-recover` ends it (Crashed)")
    if not report["stuck"]:
        print("stuck:       none")
    print(f"artifacts and logs of each run: the UI at {url[:-4]}/runs; process logs in {home / 'logs'}")
    return 0 if ok else 1


ACTIONS = ("up", "down", "worker-restart", "recover", "status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    args = parser.parse_args(argv)
    home = prefect_home()
    os.environ["PREFECT_HOME"] = str(home)
    if args.action == "up":
        up(home, args.port, args.pool, ui=not args.no_ui)
    elif args.action == "down":
        down(home, api_url(args.port), args.pool)
    elif args.action == "worker-restart":
        worker_restart(home, args.port, args.pool)
    elif args.action == "recover":
        return recover(home, args.port, args.pool)
    else:
        return print_status(home, args.port, args.pool, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
