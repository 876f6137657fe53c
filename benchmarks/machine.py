"""The machine anchor every speed benchmark reports against, measured in the same run.

A ratio against a naive loop says little when the loop is already good; the honest yardstick is what
this machine's matrix units reach on the model's own shapes. ``matmul_rate`` times the linear layers of
one decoder layer (q, k, v, o, gate, up, down: hidden x hidden, hidden x kv, hidden x intermediate,
intermediate x hidden) at the number of tokens a forward pass feeds them, and returns GFLOP/s.
``model_flops`` counts the FLOPs a forward pass must do on real tokens (2 per multiply-add: the linear
layers plus causal attention), so achieved FLOP/s over the anchor is the model FLOPs utilisation (MFU).

Imported by the scripts beside it (``from machine import ...``); not part of the library.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe() -> str:
    """One line: CPU, cores, threads, SIMD, torch; printed at the top of every benchmark."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = cpu_flags()
    native_bf16 = "yes" if {"avx512_bf16", "amx_bf16"} & flags else "no"
    return (f"machine: {cpu_name()} | {cores} cores | torch {torch.__version__} with {torch.get_num_threads()} threads | "
            f"SIMD {torch.backends.cpu.get_cpu_capability()} | native bf16 {native_bf16}")


def layer_linear_shapes(config) -> list[tuple[int, int]]:
    """``(in, out)`` of every linear layer in one decoder layer of a Llama/Qwen2-style model."""
    h, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * head_dim
    return [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]


def linear_flops_per_token(config, lm_head: bool = False) -> float:
    """FLOPs of all decoder linear layers for one token (+ the LM head when it runs)."""
    per_layer = sum(2 * a * b for a, b in layer_linear_shapes(config))
    head = 2 * config.hidden_size * config.vocab_size if lm_head else 0
    return per_layer * config.num_hidden_layers + head


def attention_flops(config, length: int, context: int = 0) -> float:
    """FLOPs of causal attention (QK^T and AV) for ``length`` new tokens after ``context`` cached ones."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim
    keys = length * context + length * (length + 1) // 2  # token i attends to context + i + 1 keys
    return 4 * width * keys * config.num_hidden_layers


def model_flops(config, lengths: list[int]) -> float:
    """Forward FLOPs over sequences of these real lengths (no padding counted)."""
    per_token = linear_flops_per_token(config)
    return sum(n * per_token + attention_flops(config, n) for n in lengths)


def matmul_rate(config, tokens: int, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best GFLOP/s of one decoder layer's linear layers on ``tokens`` rows, over about ``seconds``."""
    gen = torch.Generator().manual_seed(0)
    shapes = layer_linear_shapes(config)
    inputs = {a: torch.randn(tokens, a, generator=gen).to(dtype) for a in {a for a, _ in shapes}}
    weights = [(inputs[a], (torch.randn(b, a, generator=gen) / a ** 0.5).to(dtype)) for a, b in shapes]
    flops = sum(2 * tokens * a * b for a, b in shapes)

    def once() -> float:
        start = time.perf_counter()
        for x, w in weights:
            torch.nn.functional.linear(x, w)
        return time.perf_counter() - start

    with torch.inference_mode():
        once()  # warm-up: oneDNN primitive creation
        best, spent = float("inf"), 0.0
        while spent < seconds or best == float("inf"):
            t = once()
            best, spent = min(best, t), spent + t
    return flops / best / 1e9


def missing_inputs(data: Path, data_file: str, model_dir: Path) -> bool:
    """Print one error line and return True when the BEIR file or the model folder is absent."""
    if not (data / data_file).is_file():
        print(f"error: no {data / data_file}; this benchmark needs the shared SciFact folder (or --data DIR)",
              file=sys.stderr)
        return True
    if not (model_dir / "config.json").is_file():
        print(f"error: no model folder at {model_dir}; build it with `searchr3 model materialize --out {model_dir}` "
              f"or pass --model PATH", file=sys.stderr)
        return True
    return False


# SmolLM2-135M(-Instruct)'s architecture with the embed token (config.json of models/base): what the speed figures
# are about when the real weights are not at hand (speed does not depend on the weights' values).
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49153, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
                    tie_word_embeddings=True)


def model_dir_or_random(model_dir: Path, tmp: Path) -> tuple[Path, str]:
    """``model_dir`` when it holds a model; else SmolLM2-135M's architecture with random weights, built in ``tmp``
    (tokenizer: the tiny byte-level BPE of ``searchr3.model.tiny``, so texts tokenise longer than with SmolLM2's;
    the profiles' token caps keep the shapes). Returns the folder and a line saying which it is."""
    if (model_dir / "config.json").is_file():
        return model_dir, f"{model_dir} (real weights)"
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from searchr3.model.materialize import materialize
    from searchr3.model.tiny import build_tiny_raw

    raw = build_tiny_raw(tmp / "tokenizer")
    tok = AutoTokenizer.from_pretrained(raw)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    model.save_pretrained(tmp / "raw")
    tok.save_pretrained(tmp / "raw")
    materialize(str(tmp / "raw"), tmp / "model")
    return tmp / "model", (f"no model at {model_dir}: SmolLM2-135M's architecture with random weights "
                           "(tiny byte-level tokenizer; speed only)")


def scifact_train_rows(data: Path, n: int, negatives: int, seed: int, docs: int = 0) -> tuple[list[dict], dict[str, str]]:
    """``n`` seeded SciFact train rows for the training-step benchmarks: query, its first positive, ``negatives``
    seeded random other documents, and ``trace`` (the positive's first 64 words: a stand-in for a kept reasoning
    trace, cut by the trainer at its token cap); and a corpus of the rows' documents plus seeded distractors up
    to ``docs`` in all (0: the rows' documents only)."""
    import random

    from searchr3.data.beir import load_beir

    rs = load_beir(data, "train")
    rng = random.Random(seed)
    doc_ids = sorted(rs.corpus)
    qids = sorted(rs.judged_queries())
    rng.shuffle(qids)
    rows = []
    for qid in qids[:n]:
        pos = sorted(d for d, r in rs.qrels[qid].items() if r > 0 and d in rs.corpus)[0]
        negs = [d for d in rng.sample(doc_ids, negatives + 1) if d != pos][:negatives]
        rows.append({"query_id": qid, "query": rs.queries[qid], "positive_id": pos, "positive": rs.corpus[pos],
                     "negative_ids": negs, "negatives": [rs.corpus[d] for d in negs],
                     "trace": " ".join(rs.corpus[pos].split()[:64])})
    keep = {d for r in rows for d in [r["positive_id"], *r["negative_ids"]]}
    others = [d for d in doc_ids if d not in keep]
    rng.shuffle(others)
    chosen = sorted(keep | set(others[: max(0, docs - len(keep))]))
    return rows, {d: rs.corpus[d] for d in chosen}


def has_train_split(data: Path) -> bool:
    """Print one error line and return False when the BEIR folder has no train qrels."""
    if (data / "qrels" / "train.tsv").is_file():
        return True
    print(f"error: no {data / 'qrels' / 'train.tsv'}; this benchmark needs the shared SciFact folder (or --data DIR)",
          file=sys.stderr)
    return False
