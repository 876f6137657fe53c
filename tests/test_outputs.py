"""One writer per output (searchr3.outputs): stage locks, orphan cleanup, the writable check, metrics with the model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchr3 import stages
from searchr3.errors import EXIT_BUSY, OutputBusy, OutputUnwritable
from searchr3.outputs import claim_outputs, lock_path, metrics_with, output_lock

REPO = Path(__file__).resolve().parents[1]


def test_a_second_claim_on_a_held_output_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "models" / "sft"
    with output_lock(out):
        started = time.perf_counter()
        with pytest.raises(OutputBusy, match=r"models/sft: busy: another run is writing it \(pid \d+") as err:
            with claim_outputs(out):
                pass
        assert time.perf_counter() - started < 1.0 and err.value.exit_code == EXIT_BUSY
    with claim_outputs(out):  # released with the holder
        pass
    assert lock_path(out) == tmp_path / "models" / ".sft.lock"


def test_claiming_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    models, ckpt = tmp_path / "models", tmp_path / "checkpoints" / "sft"
    (models / "sft").mkdir(parents=True)
    (models / "sft" / "model.safetensors").write_text("keep")
    orphans = [models / ".sft.building-abc12", models / ".sft.old-x9", ckpt / "index" / ".step-000004.building-q"]
    for folder in orphans:
        (folder / "inner").mkdir(parents=True)
    tmp_files = [ckpt / ".checkpoint-000004.pt.k2j3.tmp", tmp_path / "metrics" / ".sft.json.z1.tmp"]
    for f in tmp_files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("half")
    (ckpt / "checkpoint-000002.pt").write_text("keep")
    (models / ".base.building-zz").mkdir()  # another output's temp: not ours to remove
    with claim_outputs(models / "sft", ckpt, tmp_path / "metrics" / "sft.json"):
        pass
    assert not any(p.exists() for p in orphans + tmp_files)
    assert (models / "sft" / "model.safetensors").exists() and (ckpt / "checkpoint-000002.pt").exists()
    assert (models / ".base.building-zz").exists()


def test_an_output_that_cannot_be_written_stops_the_stage_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "models").write_text("a file where the models folder should be")
    called = []
    monkeypatch.setattr("searchr3.model.materialize.materialize", lambda *a, **k: called.append(a))
    with pytest.raises(OutputUnwritable, match=r"models: not writable .*stopped before the work"):
        stages.base_model({"model": {}}, out=str(tmp_path / "models" / "base"))
    assert called == []


def test_metrics_and_model_are_committed_together(tmp_path):
    metrics, model = tmp_path / "metrics" / "sft.json", tmp_path / "models" / "sft"
    with pytest.raises(RuntimeError):
        with metrics_with(metrics, model) as put:
            raise RuntimeError("training failed")
    assert not metrics.exists() and list(metrics.parent.iterdir()) == []  # no temp file left either
    with metrics_with(metrics, model) as put:
        model.mkdir(parents=True)
        put({"steps": 3})
    assert json.loads(metrics.read_text()) == {"steps": 3}


def test_a_concurrent_stage_command_exits_5_with_one_line(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "SEARCHR3_DEBUG": ""}
    env.pop("SEARCHR3_DEBUG")
    with output_lock(tmp_path / "models" / "base"):
        proc = subprocess.run([sys.executable, "-m", "searchr3.cli", "stage", "base_model", "--no-progress"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BUSY, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("searchr3: error:") and "models/base: busy" in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "models" / "base").exists()
