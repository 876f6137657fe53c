"""Operations without a server: which runs are stuck, pid files that lie, a stage outliving its flow run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

from ops import prefect_local as local
from ops.prefect_runs import is_stuck, local_pid, process_alive


def run(pid: str | None) -> SimpleNamespace:
    return SimpleNamespace(infrastructure_pid=pid)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_runs_process_is_read_from_its_infrastructure_pid():
    assert local_pid("1234") == 1234
    assert local_pid(f"{socket.gethostname()}:1234") == 1234
    assert local_pid("another-host:1234") is None and local_pid(None) is None and local_pid("container-abc") is None


def test_a_run_is_stuck_when_its_process_is_gone_or_no_worker_will_start_it():
    alive = str(os.getpid())
    assert not is_stuck(run(alive), worker_alive=False)  # a live process reports its own end
    assert is_stuck(run(str(dead_pid())), worker_alive=True)  # gone: nothing will ever report it
    assert is_stuck(run(None), worker_alive=False)  # pending, never started, and no worker to start it
    assert not is_stuck(run(None), worker_alive=True)  # pending: the worker is starting it
    assert not is_stuck(run("another-host:1"), worker_alive=False)  # not ours to judge


def test_a_stale_pid_file_is_not_a_running_server(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "server.pid").write_text(str(dead_pid()))
    assert local.running_pid("server", tmp_path) is None
    assert not (tmp_path / "run" / "server.pid").exists()
    # after a reboot the pid may belong to another program: that is not our server either
    (tmp_path / "run" / "worker.pid").write_text(str(os.getpid()))  # pytest, not `prefect`
    assert local.running_pid("worker", tmp_path) is None


def test_a_stage_stops_when_the_process_that_started_it_is_killed(tmp_path):
    """A flow run killed outright (its worker stopped hard) must not leave `dvc repro` and training behind."""
    marker = tmp_path / "stage.pid"
    code = ("import os, sys, time\n"
            "from searchr3.commands.stage import stop_with\n"
            f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
            "stop_with(int(sys.argv[1]), interval_s=0.1)\n"
            "time.sleep(60)\n")
    # the "flow run": a process that starts the stage in a session of its own, as tasks.dvc starts dvc
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "import os\n"
                               "subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid())],"
                               " start_new_session=True)\n"
                               "time.sleep(60)\n", code])
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stage = int(marker.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while process_alive(stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(stage):
        os.kill(stage, signal.SIGKILL)
        raise AssertionError("the stage outlived the process that started it")


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and open(f"/proc/{child.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.05)
    assert not process_alive(child.pid)  # exited, not yet reaped by its parent (us)
    child.wait()
    assert not process_alive(child.pid)
