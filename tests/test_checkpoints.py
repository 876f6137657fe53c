"""Training checkpoints (searchr3.train.common): weights-only loads, the fingerprint read before any unpickling,
a planted malicious checkpoint that must not run, fallback from a truncated checkpoint, a full disk."""
from __future__ import annotations

import errno
import json
import random

import numpy as np
import pytest
import torch

from searchr3.errors import ArtifactError
from searchr3.train import common


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def state(step: int, fingerprint: str = "run-a") -> dict:
    return {"weights": {"w": torch.full((3,), float(step))}, "rng": common.rng_state(),
            "state": {"step": step, "fingerprint": fingerprint, "history": [{"loss": np.float64(0.5)}]},
            "graph": np.arange(12, dtype=np.int64).reshape(3, 4)}


def test_a_checkpoint_round_trips_bit_exactly_through_a_weights_only_load(tmp_path):
    common.seed_everything(3)
    saved = state(2)
    common.save_checkpoint(tmp_path, saved)
    loaded = common.load_checkpoint(tmp_path, "run-a")
    assert torch.equal(loaded["weights"]["w"], saved["weights"]["w"])
    np.testing.assert_array_equal(loaded["graph"], saved["graph"])
    assert loaded["graph"].dtype == np.int64
    assert loaded["state"]["history"] == [{"loss": 0.5}]
    numpy_state = loaded["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and numpy_state[1].dtype == np.uint32
    np.testing.assert_array_equal(numpy_state[1], saved["rng"]["numpy"][1])
    common.set_rng_state(loaded["rng"])  # the restored RNGs draw what the saved ones would have drawn
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    common.set_rng_state(saved["rng"])
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(1)))
    meta = json.loads((tmp_path / "checkpoint-000002.json").read_text())
    assert meta["fingerprint"] == "run-a" and meta["step"] == 2 and len(meta["sha256"]) == 64


def test_a_planted_old_format_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"state": {"fingerprint": "run-a", "step": 9}, "x": Payload(marker)}, tmp_path / "checkpoint.pt")
    assert common.load_checkpoint(tmp_path, "run-a") is None
    assert common.load_checkpoint(tmp_path) is None
    assert not marker.exists()


def _plant(folder, marker, fingerprint="run-a", step=9):
    """A malicious .pt with a forged but consistent commit record (right fingerprint, size and sha256)."""
    from searchr3.integrity import sha256_file

    pt = folder / f"checkpoint-{step:06d}.pt"
    torch.save({"state": {"fingerprint": fingerprint, "step": step}, "x": Payload(marker)}, pt)
    (folder / f"checkpoint-{step:06d}.json").write_text(json.dumps(
        {"format": 2, "fingerprint": fingerprint, "step": step, "file": pt.name, "size": pt.stat().st_size,
         "sha256": sha256_file(pt)}))


def test_a_malicious_checkpoint_with_a_forged_record_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path, marker)
    with pytest.raises(ArtifactError, match=r"checkpoint-000009.pt: unsafe_checkpoint") as err:
        common.load_checkpoint(tmp_path, "run-a")
    assert err.value.exit_code == 4
    assert not marker.exists()


def test_the_fingerprint_is_checked_before_anything_is_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    _plant(tmp_path, marker, fingerprint="someone-else")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    assert common.load_checkpoint(tmp_path, "run-a") is None
    assert loads == [] and not marker.exists()


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    for step in (2, 4, 6):
        common.save_checkpoint(tmp_path, state(step))
    assert common.checkpoint_steps(tmp_path) == [6, 4]  # the newest and its fallback; older ones dropped
    latest = tmp_path / "checkpoint-000006.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    loaded = common.load_checkpoint(tmp_path, "run-a")
    assert loaded["state"]["step"] == 4 and float(loaded["weights"]["w"][0]) == 4.0
    flipped = bytearray((tmp_path / "checkpoint-000004.pt").read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "checkpoint-000004.pt").write_bytes(bytes(flipped))
    assert common.load_checkpoint(tmp_path, "run-a") is None  # nothing verifies: start afresh, never a damaged load


def test_a_full_disk_is_an_oserror_naming_the_checkpoint(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(common.shutil, "disk_usage", lambda path: type("U", (), {"free": 1024})())
    with pytest.raises(OSError) as err:
        common.save_checkpoint(tmp_path, state(2))
    assert err.value.errno == errno.ENOSPC and err.value.filename.endswith("checkpoint-000002.pt")
    assert list(tmp_path.iterdir()) == []  # no temp file, no commit record
    from searchr3.errors import one_line

    assert "no space left on device" in one_line(err.value) and "checkpoint-000002.pt" in one_line(err.value)


def test_sft_resumes_from_the_previous_checkpoint_when_the_latest_is_truncated(tiny_model_dir, tmp_path, grpo_toy,
                                                                               monkeypatch):
    from safetensors.torch import load_file

    from searchr3.model.config import ModelConfig
    from searchr3.train.sft import train_sft
    from searchr3.train.sft_config import SFTConfig

    rows, _ = grpo_toy.toy_data(8)
    cfg = SFTConfig(steps=6, batch_size=4, checkpoint_every=2, lr=5e-3, warmup_steps=1, precision="fp32")

    def run(name):
        return train_sft(cfg, ModelConfig(), tiny_model_dir, rows, None, tmp_path / name, tmp_path / f"c{name}",
                         live_dir=None, progress=False)

    run("a")
    real_save = common.save_checkpoint

    def save_then_die(folder, st):
        real_save(folder, st)
        if st["state"]["step"] == 6:
            raise KeyboardInterrupt("killed after the last checkpoint, before the export")

    monkeypatch.setattr(common, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run("b")
    monkeypatch.setattr(common, "save_checkpoint", real_save)
    latest = tmp_path / "cb" / "checkpoint-000006.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # the disk lost the end of the newest checkpoint
    run("b")  # resumes at step 4 (the kept fallback) and redoes steps 5-6
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
