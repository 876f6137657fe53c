"""Run a stage on ``train.processes`` processes: ``searchr3 stage sft|rl`` and the Prefect tasks call :func:`run_stage`.

With ``train.processes: 1`` (the default), or inside a launch already, the stage function runs here, in this
process. Otherwise the stage starts itself under ``accelerate launch --num_processes N``
(``searchr3.train.distributed.launch_command``): the resolved parameters (profile and overrides applied) go to a
temporary YAML file the N processes read, rank 0 claims and writes the outputs (model, checkpoints, metrics,
DVCLive), and the summary returned is the one rank 0 wrote (``searchr3.paths.STAGE_SUMMARIES``).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from searchr3.config import section
from searchr3.ranks import launched

LAUNCHED_STAGES = ("sft", "rl")
STOP_WITH_ENV = "SEARCHR3_STOP_WITH_PID"  # a stage stops when the process this names is gone (searchr3.commands.stage)
LAUNCHED_BY_ENV = "SEARCHR3_LAUNCHED_BY"  # set for the processes run_stage launches: their parent reports the stage
log = logging.getLogger(__name__)


class LaunchFailed(RuntimeError):
    """The launched processes exited with a non-zero status (their own error lines are above, on stderr)."""


def processes_for(name: str, params: dict) -> int:
    """How many processes stage ``name`` runs on (``train.processes`` for the training stages, else 1)."""
    from searchr3.train.distributed import TrainConfig

    if launched() or "train" not in params:
        return 1
    return section(params, "train", TrainConfig).processes if name in LAUNCHED_STAGES else 1


def resolved_params_file(params: dict, folder: str | Path) -> Path:
    """``params`` (profile and overrides already applied) as a params file that loads back to the same sections."""
    path = Path(folder) / "params.resolved.yaml"
    plain = {k: v for k, v in params.items() if not k.startswith("_") and k not in ("profile", "profiles")}
    path.write_text(yaml.safe_dump(plain | {"profile": "default"}, sort_keys=False), encoding="utf-8")
    return path


def stage_argv(name: str, params_file: str | Path, progress: bool) -> list[str]:
    """``searchr3 --params FILE --profile default stage NAME``: the command each launched process runs."""
    return ["searchr3", "--params", str(params_file), "--profile", "default", "stage", name,
            *([] if progress else ["--no-progress"])]


def run_stage(name: str, params: dict, progress: bool = True) -> dict:
    """Run stage ``name`` of ``searchr3.stages`` with ``params``: here, or on ``train.processes`` processes."""
    from searchr3 import stages
    from searchr3.paths import STAGE_SUMMARIES
    from searchr3.train.distributed import TrainConfig, launch_command

    n = processes_for(name, params)
    if n <= 1:
        return getattr(stages, name)(params, progress=progress)
    config = section(params, "train", TrainConfig)
    with tempfile.TemporaryDirectory(prefix="searchr3-launch-") as tmp:
        cmd = launch_command(n, stage_argv(name, resolved_params_file(params, tmp), progress),
                             config_file=config.accelerate_config)
        log.info("stage %s on %d processes: %s", name, n, " ".join(cmd))
        # the launched processes (torchrun gives each a session of its own) stop if this process is killed outright
        done = subprocess.run(cmd, check=False, env=os.environ | {STOP_WITH_ENV: str(os.getpid()),
                                                                 LAUNCHED_BY_ENV: str(os.getpid())})
    if done.returncode != 0:
        raise LaunchFailed(f"stage {name} on {n} processes (accelerate launch) exited with {done.returncode}; "
                           "the processes' own error lines are above")
    return json.loads(Path(STAGE_SUMMARIES[name]).read_text(encoding="utf-8"))
