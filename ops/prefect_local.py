"""A local Prefect server and process worker in the background: ``make prefect-up`` / ``make prefect-down``.

Process supervision, not a flow (``flows/`` holds flows only). Each process runs in its own process group
(so SIGTERM reaches every process it started), with its pid in ``<home>/run/{server,worker}.pid`` and its
output in ``<home>/logs/{server,worker}.log``, where ``<home>`` is ``PREFECT_HOME`` (``.prefect/`` in the
repo, git-ignored). Stopping stops the worker first (it may still report a flow run's state to the server),
then the server. The work pool is created here too (``ensure_work_pool``); ``flows/deploy.py`` uses it.

    python -m ops.prefect_local up --port 4200 --pool searchr3
    python -m ops.prefect_local down
"""
from __future__ import annotations

import argparse
import contextlib
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


def api_settings(api_url: str | None):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: api_url}) if api_url else temporary_settings({})


def ensure_work_pool(name: str = DEFAULT_POOL, concurrency_limit: int = 1, api_url: str | None = None) -> None:
    """Create the process work pool if missing; (re)set its concurrency limit either way."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with api_settings(api_url), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", concurrency_limit=concurrency_limit,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="searchr3 training: one flow run at a time"))
        else:
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))


def _spawn(name: str, argv: list[str], home: Path, env: dict[str, str]) -> subprocess.Popen:
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(parents=True, exist_ok=True)
    with open(home / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its own process group: killpg stops all it started
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


def down(home: Path) -> None:
    """Worker first, then server; the CLI profile forgets the server's URL."""
    for name in ("worker", "server"):
        print(f"{name}: {'stopped' if stop(name, home) else 'was not running'}")
    subprocess.run([prefect_cli(), "config", "unset", "PREFECT_API_URL", "-y"], env=process_env(home),
                   capture_output=True, check=False)


def up(home: Path, port: int, pool: str, ui: bool = True) -> str:
    """Start the server, point the CLI profile at it, create the work pool, start the worker; returns the API URL."""
    url = api_url(port)
    for name in ("server", "worker"):
        pidfile = home / "run" / f"{name}.pid"
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            raise RuntimeError(f"a {name} is already running (pid {pidfile.read_text()}); `make prefect-down` first")
    server = start_server(home, port, ui=ui)
    took = wait_healthy(url, proc=server)
    print(f"server: {url} healthy after {took:.1f} s (log {home / 'logs' / 'server.log'})")
    # The CLI profile lives in PREFECT_HOME (.prefect/profiles.toml), so `prefect ...` commands find the server.
    subprocess.run([prefect_cli(), "config", "set", f"PREFECT_API_URL={url}"], env=process_env(home), check=True,
                   capture_output=True)
    ensure_work_pool(pool, api_url=url)
    start_worker(home, url, pool)
    print(f"worker: polling work pool {pool!r} (log {home / 'logs' / 'worker.log'})")
    print(f"then: make deploy; export PREFECT_API_URL={url}; "
          "prefect deployment run 'training-pipeline/manual' --param profile=tiny --watch")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--no-ui", action="store_true")
    args = parser.parse_args(argv)
    home = prefect_home()
    os.environ["PREFECT_HOME"] = str(home)
    if args.action == "up":
        try:
            up(home, args.port, args.pool, ui=not args.no_ui)
        except BaseException:
            down(home)
            raise
    else:
        down(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
