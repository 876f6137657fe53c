"""DVC from Prefect: ``dvc repro`` one stage per task (unchanged stages reuse DVC's cache) and ``dvc push``.

DVC reads ``params.yaml`` itself, including its ``profile:`` key; ``SEARCHR3_PROFILE`` is removed from the
environment of every DVC command, because a profile DVC cannot see would make it reuse outputs built
under another profile. The virtual environment's ``bin/`` is put first on ``PATH`` so the stage
commands (``searchr3 stage NAME``) resolve to this interpreter's package.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from searchr3 import stages
from tasks.artifacts import publish_eval, publish_stage_summary, publish_validation, read_json
from tasks.retry import RETRIES

# What each stage leaves behind that summarises it (published as an artifact after the stage).
STAGE_SUMMARIES = {"base_model": "models/base/manifest.json", "data": "data/manifest.json",
                   "validate": "reports/validation/summary.json", "traces": "traces/traces.summary.json",
                   "sft": "metrics/sft.json", "rl": "metrics/rl.json", "index": "indexes/production/manifest.json",
                   "evaluate": "metrics/eval.json"}
LOCK_MESSAGE = "Unable to acquire lock"


class DvcFailed(RuntimeError):
    def __init__(self, args: list[str], returncode: int, output: str):
        tail = "\n".join(output.strip().splitlines()[-30:])
        super().__init__(f"`dvc {' '.join(args)}` exited with {returncode}:\n{tail}")
        self.returncode, self.output = returncode, output


class DvcLocked(TimeoutError):
    """Another DVC command holds the repository lock (transient: the task retries)."""


class DvcPushFailed(OSError):
    """``dvc push`` failed (the remote was unreachable or full); pushing again is safe, so it is retried."""


def dvc_executable() -> str:
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise FileNotFoundError("dvc is not installed in this environment (pip install dvc)")
    return found


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SEARCHR3_PROFILE", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def run_dvc(args: list[str], cwd: str | Path = ".", timeout_s: float | None = None) -> str:
    """Run ``dvc ARGS``, log its output line by line, return it; raise on a non-zero exit or a timeout."""
    logger = _logger()
    logger.info("$ dvc %s", " ".join(args))
    proc = subprocess.Popen([dvc_executable(), *args], cwd=cwd, env=dvc_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.strip():
                logger.info("%s", line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage command it started
        proc.wait()
        raise TimeoutError(f"`dvc {' '.join(args)}` ran past {timeout_s} s") from None
    except BaseException:  # interrupted (the flow run was cancelled): stop dvc and its stage command too
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    finally:
        reader.join(timeout=10)
    output = "".join(lines)
    if returncode != 0:
        if LOCK_MESSAGE in output:
            raise DvcLocked(f"`dvc {' '.join(args)}`: {LOCK_MESSAGE} (another dvc command is running)")
        raise DvcFailed(args, returncode, output)
    return output


def stage_outcome(stage: str, output: str) -> str:
    """What ``dvc repro`` did with ``stage``: ran | skipped (unchanged) | restored (from the run cache)."""
    name = re.escape(stage)
    if re.search(rf"Running stage '{name}'", output):
        return "ran"
    if re.search(rf"Stage '{name}' is cached", output):
        return "restored"
    return "skipped"


def _validation_failure(started: float):
    """The ValidationFailed the validate stage raised inside DVC, rebuilt from the summary.json it wrote."""
    from searchr3.validate.runner import ValidationFailed, failure_message

    path = Path(STAGE_SUMMARIES["validate"])
    if not path.is_file() or path.stat().st_mtime < started:
        return None
    summary = read_json(path)
    return None if summary.get("success") else ValidationFailed(failure_message(summary), summary)


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}", cache_policy=NO_CACHE, persist_result=False, **RETRIES)
def repro_stage(stage: str, force: bool = False, gate_set: str | None = None, timeout_s: float | None = None) -> dict:
    """``dvc repro --single-item STAGE`` (in pipeline order, so upstream stages already ran); publish its summary."""
    if stage not in stages.STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(stages.STAGES)}")
    started = time.time()
    try:
        output = run_dvc(["repro", "--single-item", *(["--force"] if force else []), stage], timeout_s=timeout_s)
    except DvcFailed:
        failure = _validation_failure(started) if stage == "validate" else None
        if failure is not None:
            publish_validation(failure.summary, stages.PATHS["validation"], str(failure))
            raise failure from None
        raise
    outcome = stage_outcome(stage, output)
    _logger().info("stage %s: %s (%.1f s)", stage, outcome, time.time() - started)
    summary = read_json(STAGE_SUMMARIES[stage]) or {}
    if stage == "validate":
        publish_validation(summary, stages.PATHS["validation"])
    elif stage == "evaluate":
        publish_eval(summary, gate_set, "dvc repro evaluate")
    elif summary:
        publish_stage_summary(stage, summary, f"dvc repro {stage}")
    return {"stage": stage, "outcome": outcome, "wall_s": round(time.time() - started, 1)}


def remote_names(cwd: str | Path = ".") -> list[str]:
    return [line.split()[0] for line in run_dvc(["remote", "list"], cwd).splitlines() if line.strip()]


def ensure_remote(name: str, url: str, cwd: str | Path = ".") -> str:
    """Add DVC remote ``name`` (as the default) when it is missing; a local folder is created, git-ignored."""
    if name in remote_names(cwd):
        return name
    if not url:
        raise ValueError(f"DVC remote {name!r} does not exist and promote.dvc_remote_url is empty")
    if "://" not in url:
        folder = Path(cwd) / url
        folder.mkdir(parents=True, exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# a local DVC remote: content-addressed copies of data, models and indexes\n*\n")
    run_dvc(["remote", "add", "--default", name, url], cwd)
    return name


@task(name="dvc-push", cache_policy=NO_CACHE, persist_result=False, **RETRIES)
def push(remote: str, url: str = "") -> str:
    """``dvc push -r REMOTE`` of every output in dvc.lock (the remote is created first when missing)."""
    ensure_remote(remote, url)
    try:
        run_dvc(["push", "--remote", remote])
    except DvcFailed as err:
        raise DvcPushFailed(str(err)) from err
    return remote
