"""benchmarks/device_step.py on the CPU with a tiny config (the script a GPU user runs): it builds the architecture
from a config.json with random weights, measures an SFT step and a rollout, counts parameters exactly, and prints
the cost table for 1, 8 and 64 GPUs, marked "estimated from FLOPs" unless --measured."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "device_step.py"
TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "max_position_embeddings": 256, "tie_word_embeddings": True, "eos_token_id": 1, "bos_token_id": 0}


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("device_step_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def test_parameter_count_is_the_built_models(bench, tiny_config):
    model, config = bench.build_model(tiny_config, "cpu", __import__("torch").float32)
    assert bench.params_of(config) == sum(p.numel() for p in model.parameters())
    qwen = json.loads(bench.DEFAULT_CONFIG.read_text())
    assert qwen["hidden_size"] == 1536 and qwen["num_hidden_layers"] == 28 and qwen["vocab_size"] == 151936


def test_train_flops_per_token_by_hand(bench, tiny_config):
    from transformers import AutoConfig

    config = AutoConfig.for_model(**TINY)
    # per layer: q 32x32, k 32x16, v 32x16, o 32x32, gate/up 32x64, down 64x32 -> 2 * 10240 FLOPs; 2 layers; head 2*32*300
    linear = 2 * (32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64) * 2 + 2 * 32 * 300
    attention = 4 * 32 * (8 * 9 // 2) * 2 / 8  # seq 8: 36 query-key pairs, per token
    assert bench.train_flops_per_token(config, 8) == pytest.approx(4 * (linear + attention))
    assert bench.train_flops_per_token(config, 8, checkpointing=False) == pytest.approx(3 * (linear + attention))


def test_a_cpu_run_measures_both_phases_and_prints_the_table(bench, tiny_config, capsys):
    assert bench.main(["--config", str(tiny_config), "--device", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    sft = float(re.search(r"^sft: ([\d,]+) tokens/s", out, re.M)[1].replace(",", ""))
    rollout = float(re.search(r"^rollout: ([\d,]+) generated tokens/s", out, re.M)[1].replace(",", ""))
    assert sft > 0 and rollout > 0
    rows = re.findall(r"^\| (\d+) \| .* \| (estimated from FLOPs|measured rate) \|$", out, re.M)
    assert rows == [("1", "estimated from FLOPs"), ("8", "estimated from FLOPs"), ("64", "estimated from FLOPs")]
    assert "memory (estimated, full fine-tuning)" in out


def test_measured_rates_price_the_table(bench, tiny_config, capsys):
    bench.main(["--config", str(tiny_config), "--device", "cpu", "--quick", "--measured"])
    out = capsys.readouterr().out
    assert re.findall(r"\| (measured rate) \|$", out, re.M) == ["measured rate"] * 3


def test_more_gpus_take_less_time_but_more_gpu_hours(bench, capsys):
    bench.main(["--estimate-only"])
    rows = [r.split("|")[1:-1] for r in capsys.readouterr().out.splitlines() if re.match(r"^\| \d+ \|", r)]
    hours = [float(r[3]) for r in rows]
    gpu_hours = [float(r[4]) for r in rows]
    assert hours[0] > hours[1] > hours[2]
    assert gpu_hours[0] <= gpu_hours[1] <= gpu_hours[2]
