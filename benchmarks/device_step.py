"""The paper profile on one device: the real architecture from a ``config.json`` with random weights (no download),
an SFT training step's tokens/s and a GRPO rollout's generated tokens/s, and what 1, 8 and 64 GPUs cost per run.

Built from ``benchmarks/configs/qwen2.5-1.5b-instruct.json`` (Qwen2.5-1.5B-Instruct's values) by default:
``AutoModelForCausalLM.from_config``, bf16 on CUDA (fp32 on a CPU without native bf16), random weights.

- **SFT step**: full fine-tuning of every weight, gradient checkpointing on, AdamW: forward + backward + optimizer
  step on micro-batches of ``--sft-micro`` sequences of ``--sft-seq`` tokens (the paper profile's documents: 512).
  Tokens/s = real tokens trained per second; the paper's SFT step (``sft.batch_size`` rows, each a query with its
  trace and ``1 + negatives_per_query`` documents, every one with gradient: ``doc_grad``) is that many tokens.
- **GRPO rollout**: ``generate`` with the KV cache, sampling, ``--rollout-batch`` prompts (``rl.queries_per_step x
  rl.group_size``), ``--new-tokens`` tokens each (random weights never stop early, so this is the worst case).
- Memory: the device's peak allocation (CUDA), or this process's peak RSS (CPU).

The cost table: the run's FLOPs (SFT: 8 x params x tokens, forward + backward + the recomputed forward of
gradient checkpointing, plus attention; GRPO: rollouts 2 x params per generated token, scoring and the policy
update as SFT-like passes over the traces) divided by a per-GPU rate. With ``--measured`` (a GPU run) the rate is
the one measured here; otherwise the rate is *estimated from FLOPs*: ``--gpu-tflops`` (H100 SXM bf16 dense peak,
989) x ``--mfu`` (0.40 for training, ``--decode-mfu`` 0.10 for decoding, which is bandwidth-bound), and the rows
say "estimated". N GPUs: data parallel at ``--scaling`` efficiency (0.95 at 8, 0.85 at 64: an assumption).

    python benchmarks/device_step.py --device cuda                                  # on a GPU: measured rows
    python benchmarks/device_step.py --config benchmarks/configs/tiny.json --device cpu --quick   # a smoke run
    python benchmarks/device_step.py --estimate-only                                # the FLOPs table alone
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import attention_flops, linear_flops_per_token  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "qwen2.5-1.5b-instruct.json"
GPUS = (1, 8, 64)
SCALING = {1: 1.0, 8: 0.95, 64: 0.85}


@dataclass
class PaperRun:
    """What the paper profile runs (params.yaml profiles.paper), in tokens."""

    sft_steps: int = 2000
    sft_batch: int = 128
    query_tokens: int = 64 + 256 + 48  # query cut + trace + template/closing phrase
    doc_tokens: int = 512
    docs_per_row: int = 8  # the positive + negatives_per_query (7)
    rl_steps: int = 1000
    rl_queries: int = 16
    rl_group: int = 8
    rl_new_tokens: int = 256
    rl_prompt_tokens: int = 64 + 48

    @classmethod
    def from_params(cls, path: Path) -> "PaperRun":
        """The ``paper`` profile of params.yaml (the sizes above are its values; read back so they cannot drift)."""
        sys.path.insert(0, str(path.parent))
        from searchr3.config import load_params

        p = load_params(path, profile="paper")
        sft, rl, model = p["sft"], p["rl"], p["model"]
        return cls(sft_steps=sft["steps"], sft_batch=sft["batch_size"],
                   query_tokens=sft["max_query_tokens"] + sft["max_trace_tokens"] + 48, doc_tokens=sft["max_doc_tokens"],
                   docs_per_row=1 + sft["negatives_per_query"], rl_steps=rl["steps"], rl_queries=rl["queries_per_step"],
                   rl_group=rl["group_size"], rl_new_tokens=model["max_new_tokens"],
                   rl_prompt_tokens=rl["max_query_tokens"] + 48)

    def sft_tokens(self) -> int:
        return self.sft_steps * self.sft_batch * (self.query_tokens + self.docs_per_row * self.doc_tokens)

    def rl_generated(self) -> int:
        return self.rl_steps * self.rl_queries * self.rl_group * self.rl_new_tokens


def params_of(config) -> int:
    """Parameters of the architecture (tied embeddings counted once; Qwen2's q/k/v biases)."""
    shapes = _shapes(config)
    bias = sum(b for _, b in shapes[:3]) if getattr(config, "attention_bias", config.model_type == "qwen2") else 0
    per_layer = sum(a * b for a, b in shapes) + 2 * config.hidden_size + bias
    emb = config.vocab_size * config.hidden_size
    head = 0 if getattr(config, "tie_word_embeddings", False) else emb
    return per_layer * config.num_hidden_layers + emb + head + config.hidden_size


def _shapes(config):
    from machine import layer_linear_shapes

    return layer_linear_shapes(config)


def train_flops_per_token(config, seq: int, checkpointing: bool = True) -> float:
    """FLOPs to train on one token of a ``seq``-token sequence: (2 forward + 4 backward [+ 2 recompute]) per weight
    multiply-add, i.e. 3x (4x) the forward's linear FLOPs incl. the LM head, plus attention likewise."""
    forward = linear_flops_per_token(config, lm_head=True) + attention_flops(config, seq) / seq
    return forward * (4 if checkpointing else 3)


def decode_flops_per_token(config, context: int) -> float:
    """FLOPs to generate one token with the KV cache after ``context`` tokens (one forward of one token)."""
    return linear_flops_per_token(config, lm_head=True) + attention_flops(config, 1, context)


def run_flops(config, run: PaperRun) -> dict[str, float]:
    """The paper run's FLOPs by phase (SFT; GRPO rollouts; GRPO scoring + update, both trained-token-like passes)."""
    sft = run.sft_tokens() * train_flops_per_token(config, run.doc_tokens)
    context = run.rl_prompt_tokens + run.rl_new_tokens // 2
    rollout = run.rl_generated() * decode_flops_per_token(config, context)
    traces = run.rl_steps * run.rl_queries * run.rl_group * (run.rl_prompt_tokens + run.rl_new_tokens)
    # scoring: policy + reference forwards (2 x forward = 2/4 of a checkpointed train pass); update: one train pass
    update = traces * train_flops_per_token(config, run.rl_prompt_tokens + run.rl_new_tokens) * 1.5
    return {"sft": sft, "rl_rollout": rollout, "rl_update": update}


def memory_estimate_gb(config, micro: int, seq: int, full: bool = True) -> dict[str, float]:
    """Training memory of full fine-tuning, estimated: fp32 weights, gradients and AdamW's two moments plus the frozen
    fp32 reference of ``mode: full`` (20 bytes per parameter); activations with gradient checkpointing (one bf16
    hidden state per layer per token, plus one layer's working set and the fp32 logits of the micro-batch)."""
    n = params_of(config)
    static = n * (20 if full else 6) / 2**30
    tokens = micro * seq
    checkpoints = config.num_hidden_layers * tokens * config.hidden_size * 2
    layer = tokens * (4 * config.hidden_size + 2 * config.intermediate_size) * 4
    logits = tokens * config.vocab_size * 4 * 2  # logits and their gradient
    return {"static": static, "activations": (checkpoints + layer + logits) / 2**30}


# ---- measurements -------------------------------------------------------------------------------------------------

def build_model(config_path: Path, device: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    config = AutoConfig.for_model(**raw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    return model, config


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_sft(model, config, device: str, micro: int, seq: int, steps: int) -> float:
    """Tokens/s of full fine-tuning (gradient checkpointing, AdamW), after one warm-up step."""
    model.train()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (micro, seq), generator=gen).to(device)

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * micro * seq / (time.perf_counter() - started)


def measure_rollout(model, config, device: str, batch: int, prompt: int, new_tokens: int) -> float:
    """Generated tokens/s of sampling with the KV cache (no early stop), after a short warm-up."""
    model.eval()
    model.config.use_cache = True
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, config.vocab_size, (batch, prompt), generator=gen).to(device)
    mask = torch.ones_like(ids)
    kw = dict(do_sample=True, temperature=0.8, top_k=0, pad_token_id=config.eos_token_id or 0, eos_token_id=None)
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, min_new_tokens=2, **kw)
        sync(device)
        started = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             **kw)
        sync(device)
    generated = (out.shape[1] - prompt) * batch
    return generated / (time.perf_counter() - started)


# ---- the table ----------------------------------------------------------------------------------------------------

def cost_rows(flops: dict[str, float], train_rate: float, decode_rate: float, price: float, measured: bool) -> list[str]:
    """One row per GPU count: hours for SFT, GRPO and the whole run, GPU-hours and cost."""
    rows = []
    label = "measured rate" if measured else "estimated from FLOPs"
    for n in GPUS:
        eff = n * SCALING[n]
        sft_h = flops["sft"] / (train_rate * eff) / 3600
        rl_h = (flops["rl_rollout"] / decode_rate + flops["rl_update"] / train_rate) / eff / 3600
        total = sft_h + rl_h
        rows.append(f"| {n} | {sft_h:.2f} | {rl_h:.2f} | {total:.2f} | {total * n:.1f} | ${total * n * price:,.0f} | {label} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a model config.json (values only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32", "auto"], default="auto",
                        help="auto: bf16 on CUDA, fp32 on CPU (no native bf16 on most CPUs)")
    parser.add_argument("--sft-micro", type=int, default=8)
    parser.add_argument("--sft-seq", type=int, default=512)
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--rollout-batch", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=112)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--estimate-only", action="store_true", help="no measurement: the FLOPs table only")
    parser.add_argument("--measured", action="store_true",
                        help="price the table with the rates measured here (use on the GPU the table is for)")
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="per-GPU bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--mfu", type=float, default=0.40, help="assumed training MFU for the estimate")
    parser.add_argument("--decode-mfu", type=float, default=0.10, help="assumed decoding MFU (bandwidth-bound)")
    parser.add_argument("--price", type=float, default=2.50, help="assumed $ per GPU-hour")
    parser.add_argument("--params-file", type=Path, default=Path(__file__).resolve().parents[1] / "params.yaml")
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_micro, args.sft_seq, args.sft_steps = 2, 32, 2
        args.rollout_batch, args.prompt_tokens, args.new_tokens = 4, 8, 8

    from transformers import AutoConfig

    raw = {k: v for k, v in json.loads(args.config.read_text()).items() if not k.startswith("_")}
    config = AutoConfig.for_model(**raw)
    run = PaperRun.from_params(args.params_file)
    n_params = params_of(config)
    print(f"# device_step: {args.config.name} ({config.model_type}, {n_params / 1e9:.2f} B parameters, "
          f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, vocab {config.vocab_size})")
    print(f"# command: python benchmarks/device_step.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    sft_rate = rollout_rate = None
    if not args.estimate_only:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(
            args.dtype, torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
        model, config = build_model(args.config, args.device, dtype)
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
        print(f"# measured on {name}, {str(dtype).removeprefix('torch.')}, random weights")
        sft_rate = measure_sft(model, config, args.device, args.sft_micro, args.sft_seq, args.sft_steps)
        sft_mem = peak_memory_gb(args.device)
        rollout_rate = measure_rollout(model, config, args.device, args.rollout_batch, args.prompt_tokens, args.new_tokens)
        mem = peak_memory_gb(args.device)
        step_tokens = run.sft_batch * (run.query_tokens + run.docs_per_row * run.doc_tokens)
        print(f"sft: {sft_rate:,.0f} tokens/s (micro-batch {args.sft_micro} x {args.sft_seq}, full fine-tuning, "
              f"gradient checkpointing, AdamW) -> paper SFT step ({step_tokens:,} tokens) {step_tokens / sft_rate:.1f} s; "
              f"peak memory {sft_mem:.1f} GB")
        print(f"rollout: {rollout_rate:,.0f} generated tokens/s (batch {args.rollout_batch}, prompt {args.prompt_tokens}, "
              f"{args.new_tokens} new tokens, KV cache, sampling); peak memory {mem:.1f} GB")
    mem = memory_estimate_gb(config, args.sft_micro, args.sft_seq)
    print(f"memory (estimated, full fine-tuning): {mem['static']:.1f} GB static (fp32 weights, gradients, AdamW, frozen "
          f"reference: 20 B/parameter) + {mem['activations']:.1f} GB activations at micro-batch {args.sft_micro} x "
          f"{args.sft_seq} with gradient checkpointing")
    flops = run_flops(config, run)
    if args.measured and sft_rate:
        train_rate = sft_rate * train_flops_per_token(config, args.sft_seq)
        decode_rate = rollout_rate * decode_flops_per_token(config, args.prompt_tokens + args.new_tokens // 2)
        how = "the rates measured above"
    else:
        train_rate, decode_rate = args.gpu_tflops * 1e12 * args.mfu, args.gpu_tflops * 1e12 * args.decode_mfu
        how = (f"estimated from FLOPs: {args.gpu_tflops:g} TFLOP/s per GPU x MFU {args.mfu:g} (training), "
               f"x {args.decode_mfu:g} (decoding)")
    print(f"\n## The paper profile's run: SFT {run.sft_steps} steps x {run.sft_batch} rows "
          f"({run.sft_tokens() / 1e9:.2f} B tokens), GRPO {run.rl_steps} steps x {run.rl_queries} x {run.rl_group} traces "
          f"({run.rl_generated() / 1e6:.0f} M generated tokens)")
    print(f"FLOPs: SFT {flops['sft']:.3g} (8 x params x tokens + attention), GRPO rollouts {flops['rl_rollout']:.3g} "
          f"(2 x params per generated token), GRPO scoring + update {flops['rl_update']:.3g}; rates: {how}; "
          f"data parallel at {SCALING[8]:g} (8) / {SCALING[64]:g} (64) scaling efficiency; ${args.price:.2f} per GPU-hour")
    print("\n| GPUs | SFT h | GRPO h | total h | GPU-h | cost | basis |")
    print("|---|---|---|---|---|---|---|")
    for row in cost_rows(flops, train_rate, decode_rate, args.price, bool(args.measured and sft_rate)):
        print(row)
    step_tokens = run.sft_batch * (run.query_tokens + run.docs_per_row * run.doc_tokens)
    print(f"\nSFT step on 1 GPU: {step_tokens * train_flops_per_token(config, run.doc_tokens) / train_rate:.1f} s "
          f"({step_tokens:,} tokens); GRPO step: {flops['rl_rollout'] / decode_rate / run.rl_steps:.1f} s rollouts + "
          f"{flops['rl_update'] / train_rate / run.rl_steps:.1f} s scoring and update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
