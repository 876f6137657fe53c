"""benchmarks/index_refresh.py --rl: the recorder measured on a real (tiny) GRPO run, and its report."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from searchr3.model.config import ModelConfig
from searchr3.train.grpo import train_grpo

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "index_refresh.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("index_refresh_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROBES = ["alpha beta gamma", "delta epsilon", "zeta eta"]


def record(bench, grpo_toy, model_dir, out, **refresh):
    """A 4-step GRPO run on the toy data with the benchmark's recorder as its on_step hook."""
    rows, corpus = grpo_toy.toy_data()
    recorder = bench.RLRefreshRecorder(PROBES, full_every=2, steps=4)
    icfg = grpo_toy.index_config(**({"probe_every": 0} | refresh))
    train_grpo(grpo_toy.config(steps=4, checkpoint_every=4), ModelConfig(max_new_tokens=6), icfg, model_dir, rows,
               corpus, out / "m", out / "c", out / "i", live_dir=None, progress=False, on_step=recorder)
    return recorder, corpus


def test_recorder_measures_selective_against_full_on_a_real_run(tiny_model_dir, tmp_path, capsys, grpo_toy):
    bench = load_benchmark()
    recorder, corpus = record(bench, grpo_toy, tiny_model_dir, tmp_path, budget_per_step=3, full_refresh_every=0)
    assert [r["step"] for r in recorder.rows] == [1, 2, 3, 4]
    measured = [r for r in recorder.rows if "full_s" in r]
    assert [r["step"] for r in measured] == [1, 2, 4]  # step 1, every 2nd step, the last
    n_docs = len(corpus)
    for r in recorder.rows:
        assert 0 < r["sel_docs"] <= 3  # the budget, no rotation
    for r in measured:
        assert r["full_docs"] == n_docs and r["full_fid"] == 1.0

    logged = {1: recorder.rows[0]["reward"], 2: recorder.rows[1]["reward"] + 1.0}
    assert bench.report_rl(recorder.rows, logged, str(tmp_path / "rows.json")) == 0
    out = capsys.readouterr().out
    sel = sum(r["sel_docs"] for r in recorder.rows)
    assert f"documents encoded over 4 steps: selective {sel}  full {4 * n_docs}" in out
    assert "reward/mean equal at 1/2 logged steps" in out
    assert float(re.search(r"ratio: ([0-9.]+)", out).group(1)) == round(sel / (4 * n_docs), 2)
    assert (tmp_path / "rows.json").exists()


def test_logged_rewards_reads_the_dvclive_tsv(tmp_path):
    bench = load_benchmark()
    tsv = tmp_path / "plots" / "metrics" / "reward" / "mean.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tmean\n1\t0.5\n2\t0.25\n")
    assert bench.logged_rewards(tmp_path) == {1: 0.5, 2: 0.25}
    assert bench.logged_rewards(tmp_path / "absent") == {}


@pytest.mark.parametrize("rotation", [0, 1])
def test_each_arm_is_the_index_it_claims_to_be(tiny_model_dir, tmp_path, grpo_toy, rotation):
    """No budget and no rotation: the live index never changes, so it scores exactly as the never-refreshed arm.
    No budget but a rotation over the whole corpus every step: it is the fully fresh index (fidelity 1)."""
    recorder, corpus = record(load_benchmark(), grpo_toy, tiny_model_dir, tmp_path, budget_per_step=0,
                              full_refresh_every=rotation)
    measured = [r for r in recorder.rows if "full_s" in r]
    assert [r["step"] for r in measured] == [1, 2, 4]
    if rotation == 0:
        assert all(r["sel_docs"] == 0 for r in recorder.rows)
        assert [r["sel_fid"] for r in measured] == [r["none_fid"] for r in measured]
    else:
        assert all(r["sel_docs"] == len(corpus) for r in recorder.rows)
        assert all(r["sel_fid"] == 1.0 for r in measured)


def test_drift_mode_runs_the_five_arms_on_real_training_and_ends_with_the_ratio_line(
        tiny_model_dir, tmp_path, capsys, monkeypatch, grpo_toy):
    import searchr3.data.build as build

    bench = load_benchmark()
    rows, corpus = grpo_toy.toy_data(n=16, distractors=24)
    monkeypatch.setattr(build, "load_train_with_corpus", lambda data_dir: ([dict(r) for r in rows], dict(corpus)))
    argv = ["--drift", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--steps", "3", "--batch", "2",
            "--docs", "30", "--probe", "4", "--budget", "3", "--full-every", "0", "--lr", "0.05", "--doc-tokens", "16",
            "--json", str(tmp_path / "drift.json")]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: [0-9.]+ selective: [0-9.]+ none: [0-9.]+", out[-1])
    import json
    result = json.loads((tmp_path / "drift.json").read_text())
    steps = result["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    for s in steps:
        assert s["full_fid"] == 1.0 and s["full_docs"] == 30
        assert 0 < s["sel_docs"] <= 3 and s["rand_docs"] == s["sel_docs"]  # random arm: the same budget
        assert 0 < s["aln_docs"] <= 3  # aligned: the selective budget, on its own index
    assert steps[-1]["none_fid"] < 1.0  # real training moved the documents
    assert all(s["moved_trained"] > 0 and s["moved_other"] > 0 for s in steps)  # LoRA moves untrained documents too
    assert all(f"share{int(x * 100)}_aligned_fid" in s for s in steps for x in bench.SHARES)
    assert any(line.startswith("what a budget buys at the last step") for line in out)
    assert result["ratio"] == sum(s["sel_docs"] for s in steps) / 90
    assert any(line.startswith("how far a document moves in one step") for line in out)


def test_moved_by_step_splits_the_drift_between_trained_and_other_documents():
    bench = load_benchmark()
    before = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    after = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])  # row 0 turned 90°, row 1 45°, row 2 only rescaled
    moved = bench.moved_by_step(before, after, [0])
    assert moved["moved_trained"] == pytest.approx(1.0)
    assert moved["moved_other"] == pytest.approx((1 - np.sqrt(0.5)) / 2)


def test_budget_curve_refreshes_a_random_share_and_corrects_the_rest():
    bench = load_benchmark()
    rng = np.random.default_rng(0)
    stale = rng.normal(size=(40, 8))
    stale /= np.linalg.norm(stale, axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    fresh = (stale @ rotation).astype(np.float32)  # the whole space turned: a drift a linear correction undoes
    probe = rng.normal(size=(6, 8)).astype(np.float32) @ rotation.astype(np.float32)
    ids = [f"d{i}" for i in range(40)]
    curve = bench.budget_curve(ids, stale.astype(np.float32), fresh, probe, seed=0)
    assert set(curve) == {f"share{int(x * 100)}{s}_fid" for x in bench.SHARES for s in ("", "_aligned")}
    assert curve["share10_fid"] < 0.5  # 4 of 40 fresh, 36 turned away: the top-10s barely meet
    assert curve["share75_fid"] > curve["share10_fid"]  # more of the index fresh, closer to the fresh top-10
    assert curve["share25_aligned_fid"] == pytest.approx(1.0)  # 10 pairs in 8 dimensions pin the rotation down
