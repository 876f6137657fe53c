"""DVC from Prefect: ``dvc repro`` one stage per task (unchanged stages reuse DVC's cache) and ``dvc push``.

DVC reads ``params.yaml`` itself, including its ``profile:`` key; ``SEARCHR3_PROFILE`` is removed from the
environment of every DVC command, because a profile DVC cannot see would make it reuse outputs built
under another profile. Commands run with ``ops.environment.tool_env`` (offline variables, this virtual
environment's ``bin/`` first on ``PATH``, so the stage commands resolve to this interpreter's package).

What a repro did is read from machine-readable sources, never from DVC's log text: ``dvc status --json``
before it says whether the stage was out of date, and ``searchr3 stage`` appends a JSON line to the file
named by ``SEARCHR3_STAGE_LOG`` when DVC runs its command (rather than restoring the outputs from the run
cache). A repository locked by another DVC command is waited for (``dvc --wait-for-lock``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from ops.environment import find_tool, tool_env
from searchr3 import stages
from searchr3.commands.stage import STAGE_LOG_ENV, STOP_WITH_ENV
from searchr3.files import read_json_if_exists
from searchr3.paths import PATHS, STAGE_SUMMARIES
from tasks.artifacts import publish_eval, publish_stage_summary, publish_validation
from tasks.retry import RETRIES


class DvcFailed(RuntimeError):
    def __init__(self, args: list[str], returncode: int, output: str):
        tail = "\n".join(output.strip().splitlines()[-30:])
        super().__init__(f"`dvc {' '.join(args)}` exited with {returncode}:\n{tail}")
        self.returncode, self.output = returncode, output


class DvcPushFailed(OSError):
    """``dvc push`` failed (the remote was unreachable or full); pushing again is safe, so it is retried."""


def dvc_executable() -> str:
    return find_tool("dvc")


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = tool_env(extra)
    env.pop("SEARCHR3_PROFILE", None)
    return env


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def run_dvc(args: list[str], cwd: str | Path = ".", timeout_s: float | None = None,
            env: dict[str, str] | None = None) -> str:
    """Run ``dvc ARGS`` (waiting for DVC's lock), log its output line by line, return it (stdout and stderr,
    for people); raise on a non-zero exit or a timeout. ``env`` adds variables to the command's environment."""
    logger = _logger()
    logger.info("$ dvc %s", " ".join(args))
    env = {STOP_WITH_ENV: str(os.getpid()), **(env or {})}  # the stage stops if this process is killed outright
    proc = subprocess.Popen([dvc_executable(), "--wait-for-lock", *args], cwd=cwd, env=dvc_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
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
        raise DvcFailed(args, returncode, output)
    return output


def stage_is_stale(stage: str, cwd: str | Path = ".", timeout_s: float | None = None) -> bool:
    """Whether ``dvc status --json STAGE`` reports anything changed for the stage itself (deps, params, outs, cmd)."""
    args = ["--wait-for-lock", "status", "--json", stage]
    try:
        done = subprocess.run([dvc_executable(), *args], cwd=cwd, env=dvc_env(), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"`dvc status --json {stage}` ran past {timeout_s} s") from None
    if done.returncode != 0:
        raise DvcFailed(args, done.returncode, done.stdout + done.stderr)
    return bool(json.loads(done.stdout))


def stage_outcome(stage: str, stale: bool, ran: list[str]) -> str:
    """What ``dvc repro`` did with ``stage``: ran | restored (from the run cache) | skipped (unchanged).

    ``stale``: ``dvc status`` reported it out of date (or it was forced); ``ran``: the stages whose command ran.
    """
    if stage in ran:
        return "ran"
    return "restored" if stale else "skipped"


def _stages_that_ran(log: Path) -> list[str]:
    text = log.read_text(encoding="utf-8") if log.is_file() else ""
    return [json.loads(line)["stage"] for line in text.splitlines() if line.strip()]


def _validation_failure(started: float):
    """The ValidationFailed the validate stage raised inside DVC, rebuilt from the summary.json it wrote."""
    from searchr3.validate.runner import ValidationFailed, failure_message

    path = Path(STAGE_SUMMARIES["validate"])
    if not path.is_file() or path.stat().st_mtime < started:
        return None
    summary = read_json_if_exists(path)
    return None if summary.get("success") else ValidationFailed(failure_message(summary), summary)


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}", cache_policy=NO_CACHE, persist_result=False, **RETRIES)
def repro_stage(stage: str, force: bool = False, gate_set: str | None = None, timeout_s: float | None = None) -> dict:
    """``dvc repro --single-item STAGE`` (in pipeline order, so upstream stages already ran); publish its summary."""
    if stage not in stages.STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(stages.STAGES)}")
    started = time.time()
    stale = force or stage_is_stale(stage, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="searchr3-repro-") as tmp:
        log = Path(tmp) / "stages.jsonl"
        try:
            run_dvc(["repro", "--single-item", *(["--force"] if force else []), stage], timeout_s=timeout_s,
                    env={STAGE_LOG_ENV: str(log)})
        except DvcFailed:
            failure = _validation_failure(started) if stage == "validate" else None
            if failure is not None:
                publish_validation(failure.summary, PATHS["validation"], str(failure))
                raise failure from None
            raise
        outcome = stage_outcome(stage, stale, _stages_that_ran(log))
    _logger().info("stage %s: %s (%.1f s)", stage, outcome, time.time() - started)
    summary = read_json_if_exists(STAGE_SUMMARIES[stage]) or {}
    if stage == "validate":
        publish_validation(summary, PATHS["validation"])
    elif stage == "evaluate":
        publish_eval(summary, gate_set, "dvc repro evaluate")
    elif summary:
        publish_stage_summary(stage, summary, f"dvc repro {stage}")
    return {"stage": stage, "outcome": outcome, "wall_s": round(time.time() - started, 1)}


def remote_names(cwd: str | Path = ".") -> list[str]:
    return [line.split()[0] for line in run_dvc(["remote", "list"], cwd).splitlines() if line.strip()]


def ensure_remote(name: str, url: str, cwd: str | Path = ".") -> str:
    """Add DVC remote ``name`` (as the default) when it is missing; a local folder is created, git-ignored.

    The remote goes to ``.dvc/config.local`` (git-ignored by DVC), never to the committed ``.dvc/config``: a
    nightly leaves the work tree clean. A team that wants the remote for everyone commits it once in .dvc/config.
    """
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
    run_dvc(["remote", "add", "--local", "--default", name, url], cwd)
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
