"""A local Prefect server and process worker in the background: ``make prefect-up`` / ``make prefect-down``.

Each runs in its own process group (so SIGTERM reaches every process it started), with its pid in
``<home>/run/{server,worker}.pid`` and its output in ``<home>/logs/{server,worker}.log``, where
``<home>`` is ``PREFECT_HOME`` (``.prefect/`` in the repo, git-ignored). Stopping stops the worker
first (it may still report a flow run's state to the server), then the server.

    python -m flows.local up --port 4200 --pool searchr3
    python -m flows.local down
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_POOL = "searchr3"
QUIET_ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
             "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
             "DVC_NO_ANALYTICS": "1", "PREFECT_LOGGING_EXTRA_LOGGERS": "searchr3"}


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()


def api_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/api"


def prefect_cli() -> str:
    beside = Path(sys.executable).with_name("prefect")
    found = str(beside) if beside.exists() else shutil.which("prefect")
    if not found:
        raise FileNotFoundError("the prefect command is not installed in this environment")
    return found


def process_env(home: Path, url: str | None = None) -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if url:
        env["PREFECT_API_URL"] = url
    return env


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
    from flows.deploy import ensure_work_pool

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
