"""``searchr3 stage NAME``: run one pipeline stage (what each ``dvc.yaml`` stage calls)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from searchr3 import stages
from searchr3.launch import LAUNCHED_BY_ENV, STOP_WITH_ENV, run_stage
from searchr3.paths import PATHS
from searchr3.ranks import launched, secondary_rank

# When set (``tasks.dvc`` sets it for the ``dvc repro`` it starts), each stage this command runs appends one
# JSON line to the file it names: the machine-readable record that DVC ran the stage's command rather than
# skipping it or restoring its outputs from the run cache.
STAGE_LOG_ENV = "SEARCHR3_STAGE_LOG"
# STOP_WITH_ENV (searchr3.launch): when set (``tasks.dvc`` sets it to the flow run's pid), the stage stops when that
# process is gone: a flow run killed outright (its worker stopped with SIGKILL, a crash) must not leave `dvc repro`
# and training running on as orphans that hold DVC's lock and race the next run. The processes of a launch watch
# the `searchr3 stage` that started them the same way.


def register(sub) -> None:
    p = sub.add_parser("stage", help="run one pipeline stage with the standard paths (used by dvc.yaml)")
    p.add_argument("name", choices=stages.STAGES)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def dump(summary) -> str:
    return json.dumps(summary, indent=2, default=str)


def record_run(name: str) -> None:
    log = os.environ.get(STAGE_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            record = {"stage": name, "dvc_stage": os.environ.get("DVC_STAGE"), "pid": os.getpid()}
            handle.write(json.dumps(record) + "\n")


def stop_with(pid: int, interval_s: float = 1.0) -> threading.Thread:
    """Watch ``pid`` in a daemon thread; when it is gone, SIGTERM this process's group (the ``dvc repro`` that
    started us and its shell, which ``tasks.dvc`` puts in a session of their own), or only this process when
    the group is not such a session (a command typed in a terminal)."""
    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(interval_s)
        logging.getLogger(__name__).warning("process %d that ran this stage is gone: stopping", pid)
        if os.getpgrp() == os.getsid(0):
            os.killpg(os.getpgrp(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread


def _run(args) -> int:
    from searchr3.config import load_params, profile_mismatch
    from searchr3.errors import ConfigError

    if os.environ.get("DVC_STAGE") and not launched():  # run by dvc repro / dvc exp run
        if why := profile_mismatch(args.params):
            raise ConfigError(why)
        if args.overrides:
            raise ConfigError(f"--set {', '.join(args.overrides)} in a stage that dvc runs: its lock would record "
                              "params.yaml's values, not these; edit params.yaml or use `dvc exp run -S KEY=VALUE`")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params, args.profile, args.overrides)
    watched = os.environ.get(STOP_WITH_ENV, "")
    if watched.isdigit():
        stop_with(int(watched))
    if not launched():  # one record per stage run (a launch's processes are that run's, recorded by who started them)
        record_run(args.name)
    started = time.time()
    # train.processes > 1: the stage starts itself under accelerate launch (searchr3.launch); errors: one line
    summary = run_stage(args.name, params, progress=not args.no_progress)
    if secondary_rank() or os.environ.get(LAUNCHED_BY_ENV):  # the process that launched this one reports the stage
        return 0
    if args.name != "evaluate":
        print(dump(summary if not isinstance(summary, dict) or len(str(summary)) < 4000 else {"done": args.name}))
    else:
        print(Path(PATHS["report"]).read_text(encoding="utf-8"))
    print(f"stage {args.name} finished in {time.time() - started:.1f} s", file=sys.stderr)
    return 0
