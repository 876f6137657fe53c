"""Training on N processes (searchr3.train.distributed): the rank split, the launch command, the no-ops of one process,
and (slow lane, CPU, gloo) SFT on 2 processes against 1 at the same global batch, and a 2-process kill and resume.

The 2-process runs go through ``accelerate launch`` exactly as ``train.processes: 2`` starts them; the script they run
is tests/scripts/distributed_sft.py (the tiny random model, toy rows with traces, so CE, KL, InfoNCE and the triplet
term all train). Tolerance, fp32: weights within 1e-5 absolute, every logged loss within 1e-5 relative (measured:
weights differ by < 1e-6 after 3 steps; the sums over ranks only reorder float additions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from searchr3.launch import processes_for, resolved_params_file, stage_argv
from searchr3.config import load_params, section
from searchr3.train.distributed import SINGLE, Dist, TrainConfig, launch_command

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "distributed_sft.py"
CONFIG = {"steps": 3, "batch_size": 8, "eval_every": 100, "checkpoint_every": 1, "lr": 5e-3, "warmup_steps": 1,
          "precision": "fp32", "trace_warmup_steps": 1, "trace_repeats": 3, "dev_max_docs": 20, "traced": 8}
WEIGHT_ATOL, LOSS_RTOL = 1e-5, 1e-5


# ---- fast: pieces ----------------------------------------------------------------------------------------------

def test_split_gives_each_rank_a_contiguous_share_that_gathers_back_in_order():
    rows = list(range(8))
    shares = [Dist(rank=r, world=2).split(rows) for r in range(2)]
    assert shares == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sum(shares, []) == rows
    assert SINGLE.split(rows) is rows


def test_a_batch_that_does_not_split_evenly_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="multiples of train.processes"):
        Dist(rank=0, world=3).split(list(range(8)))


def test_one_process_is_a_no_op():
    t = torch.ones(2, requires_grad=True)
    assert SINGLE.gather(t) is t
    assert SINGLE.token_shares({"ce": 5}) == ({}, {"ce": 5})
    assert SINGLE.global_components({"ce": 1.0}, {"ce": 5}, {"ce": 5}, {"ce": 1.0}) == {"ce": 1.0}
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    SINGLE.sync_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]


def test_launch_command_is_accelerates_multi_process_launcher():
    cmd = launch_command(4, ["searchr3", "stage", "sft"], python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
    assert cmd[-4:] == ["-m", "searchr3", "stage", "sft"]
    two_nodes = launch_command(8, ["searchr3"], machines=2, machine_rank=1, main_address="10.0.0.1", main_port=29500,
                               config_file="acc.yaml", python="py")
    assert two_nodes[two_nodes.index("--num_processes") + 1] == "16"
    assert two_nodes[two_nodes.index("--machine_rank") + 1] == "1"
    assert two_nodes[two_nodes.index("--main_process_ip") + 1] == "10.0.0.1"
    assert two_nodes[two_nodes.index("--config_file") + 1] == "acc.yaml"
    assert "--multi_gpu" not in launch_command(1, ["searchr3"], python="py")
    with pytest.raises(ValueError):
        launch_command(0, ["searchr3"])


def test_train_processes_launches_only_the_training_stages(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    params = load_params(ROOT / "params.yaml", profile="tiny", overrides={"train.processes": 2, "sft.lr": 0.5})
    assert section(params, "train", TrainConfig).processes == 2
    assert processes_for("sft", params) == 2 and processes_for("rl", params) == 2
    assert processes_for("evaluate", params) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # inside a launch already: never launch again
    assert processes_for("sft", params) == 1
    # the launched processes read the resolved parameters back: the same sections, profile and overrides included
    again = load_params(resolved_params_file(params, tmp_path), profile="default")
    assert {k: v for k, v in again.items() if not k.startswith("_")} == \
        {k: v for k, v in params.items() if not k.startswith("_") and k not in ("profile", "profiles")}
    assert stage_argv("sft", tmp_path / "p.yaml", False)[-3:] == ["stage", "sft", "--no-progress"]


def test_default_is_one_process():
    assert TrainConfig().processes == 1
    assert processes_for("sft", load_params(ROOT / "params.yaml", profile="default")) == 1


# ---- slow: 2 gloo processes on the CPU -------------------------------------------------------------------------

def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(model_dir: Path, work: Path, processes: int, kill_after: int = 0) -> subprocess.CompletedProcess:
    script = [str(SCRIPT), str(model_dir), str(work), json.dumps(CONFIG)]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = launch_command(processes, ["x"], main_port=_port())[:-2] + script
    env = _env() | ({"SEARCHR3_TEST_KILL_AFTER": str(kill_after)} if kill_after else {})
    # a session of its own: the killed run's SIGKILL goes to its process group (launcher and ranks), not to pytest
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(work: Path) -> dict[str, list[float]]:
    metrics = work / "live" / "plots" / "metrics" / "loss"
    out = {}
    for tsv in sorted(metrics.glob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.strip()]
        out[tsv.stem] = [(int(step), float(value)) for step, value in rows]
    return out


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _ok(_train(tiny_model_dir, root / "one", 1))
    _ok(_train(tiny_model_dir, root / "two", 2))
    return root


@pytest.mark.slow
def test_two_processes_equal_one_at_the_same_global_batch(runs, tiny_model_dir):
    one, two = _losses(runs / "one"), _losses(runs / "two")
    assert set(one) == {"ce", "kl", "infonce", "triplet", "total"}, "every loss term trains in this run"
    assert set(two) == set(one)
    for term in one:
        assert [s for s, _ in two[term]] == [s for s, _ in one[term]]
        for (_, a), (_, b) in zip(one[term], two[term]):
            assert b == pytest.approx(a, rel=LOSS_RTOL), term
    wa, wb = load_file(str(runs / "one/out/model.safetensors")), load_file(str(runs / "two/out/model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=WEIGHT_ATOL)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    moved = max(float((wa[k] - start[k]).abs().max()) for k in start)
    assert moved > 100 * WEIGHT_ATOL, f"the weights moved by {moved}: the equality is not that of two untouched models"


@pytest.mark.slow
def test_dvclive_logs_once_and_rank_0_alone_writes(runs):
    live = runs / "two" / "live"
    lines = (live / "plots" / "metrics" / "loss" / "total.tsv").read_text().splitlines()
    assert len(lines) == 1 + CONFIG["steps"], "one row per step: a second rank logging would add rows"
    assert json.loads((live / "metrics.json").read_text())["step"] == CONFIG["steps"]
    ckpts = sorted(p.name for p in (runs / "two" / "ckpt").iterdir())
    assert ckpts == ["checkpoint-000002.json", "checkpoint-000002.pt", "checkpoint-000003.json", "checkpoint-000003.pt"]


@pytest.mark.slow
def test_kill_and_resume_on_two_processes_reaches_the_uninterrupted_weights(runs, tiny_model_dir):
    work = runs / "killed"
    killed = _train(tiny_model_dir, work, 2, kill_after=2)
    assert killed.returncode != 0, "the run was killed after its second checkpoint"
    assert not (work / "out").exists(), "a killed run exports nothing"
    assert (work / "ckpt" / "checkpoint-000002.json").exists()
    _ok(_train(tiny_model_dir, work, 2))
    resumed = load_file(str(work / "out/model.safetensors"))
    whole = load_file(str(runs / "two/out/model.safetensors"))
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=1e-6)
    assert _losses(work)["total"][-1] == pytest.approx(_losses(runs / "two")["total"][-1], rel=LOSS_RTOL)


# ---- slow: GRPO on 2 gloo processes (the toy GRPO data of conftest) ------------------------------------------------

GRPO_SCRIPT = ROOT / "tests" / "scripts" / "distributed_grpo.py"
GRPO_CONFIG = {"steps": 4, "checkpoint_every": 1}  # queries_per_step 4, group_size 4: 2 queries (8 traces) a rank


def _grpo(model_dir: Path, work: Path, kill_after: int = 0) -> subprocess.CompletedProcess:
    cmd = launch_command(2, ["x"], main_port=_port())[:-2] + [str(GRPO_SCRIPT), str(model_dir), str(work),
                                                              json.dumps(GRPO_CONFIG)]
    env = _env() | ({"SEARCHR3_TEST_KILL_AFTER": str(kill_after)} if kill_after else {})
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)


def _ranks(work: Path) -> list[dict]:
    return [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def grpo_run(tiny_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("grpo-ddp")
    _ok(_grpo(tiny_model_dir, work))
    return work


@pytest.mark.slow
def test_grpo_on_two_processes_splits_rollouts_and_keeps_ranks_identical(grpo_run):
    zero, one = _ranks(grpo_run)
    # rollouts split: each rank sampled its 2 queries x 4 traces of the step's 16, every step
    assert zero["traces"] == one["traces"] == [8] * GRPO_CONFIG["steps"]
    assert zero["summary"]["traces_per_step"] == 16
    # one model and one live index: every rank applied the same updates and refreshed the same ids
    assert zero["weights"] == one["weights"]
    assert zero["index"] == one["index"]
    assert zero["summary"]["refreshed_total"] > 0
    assert (grpo_run / "out" / "model.safetensors").exists() and (grpo_run / "index" / "manifest.json").exists()
    lines = (grpo_run / "live" / "plots" / "metrics" / "reward" / "mean.tsv").read_text().splitlines()
    assert len(lines) == 1 + GRPO_CONFIG["steps"], "DVCLive logs once (rank 0)"


@pytest.mark.slow
def test_grpo_kill_and_resume_on_two_processes_reaches_the_uninterrupted_run(grpo_run, tiny_model_dir, tmp_path):
    work = tmp_path / "killed"
    killed = _grpo(tiny_model_dir, work, kill_after=2)
    assert killed.returncode != 0 and not (work / "out").exists()
    _ok(_grpo(tiny_model_dir, work))
    resumed, whole = _ranks(work), _ranks(grpo_run)
    assert resumed[0]["traces"] == [8, 8], "the resumed run did steps 3 and 4 only"
    for r in range(2):
        assert resumed[r]["weights"] == whole[r]["weights"], "same sampling, same updates: bit-identical weights"
        assert resumed[r]["index"] == whole[r]["index"]


# ---- slow: `searchr3 stage sft` with train.processes: 2 (what dvc repro and the Prefect task run) ---------------

@pytest.mark.slow
def test_the_stage_command_launches_itself_on_train_processes(tmp_path):
    import shutil

    import yaml

    root = tmp_path / "repo"
    root.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "tiny"
    raw["train"]["processes"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(ROOT / "bin", root / "bin")
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = _env() | {"SEARCHR3_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SEARCHR3_PROFILE", None)
    for stage in ("base_model", "sources", "data", "traces"):
        done = subprocess.run([str(root / "bin" / "searchr3"), "stage", stage, "--no-progress"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        _ok(done)
    done = subprocess.run([str(root / "bin" / "searchr3"), "stage", "sft", "--no-progress"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    _ok(done)
    assert "stage sft on 2 processes" in done.stderr and "accelerate.commands.launch" in done.stderr
    summary = json.loads((root / "metrics" / "sft.json").read_text())
    assert summary["steps"] == raw["profiles"]["tiny"]["sft"]["steps"]
    assert json.loads(done.stdout[:done.stdout.rindex("}") + 1]) == summary, "the summary printed once, rank 0's"
    assert (root / "models" / "sft" / "model.safetensors").exists()
    assert len((root / "dvclive" / "sft" / "plots" / "metrics" / "loss" / "total.tsv").read_text().splitlines()) == \
        1 + summary["steps"]
