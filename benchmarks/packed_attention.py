"""Packed attention: one SDPA call per segment vs one call for every segment, in whole forward (and backward) passes.

The real architecture (SmolLM2-135M's ``config.json`` values, ``machine.SMOLLM2_135M``; random weights: speed does
not depend on their values) runs packed rows through ``searchr3.model.packing``'s two attention forms, interleaved
pass after pass on the same inputs:

  per segment  ``attend_per_segment``: a Python loop of one SDPA per text in every layer (the only form before
               2026-11-28; what ``_packed_sdpa`` picks on a CPU)
  one call     ``attend_in_one_call``: the segments as a padded batch, one SDPA per layer (what ``_packed_sdpa``
               picks on an accelerator)

Passes, each a packed row of about ``--budget`` tokens (``model.batch_tokens``):

  encode     documents of 200-256 tokens (SciFact abstracts at the 256-token cap), no gradient (evaluation,
             index refresh)
  train      the same documents after a shared 30-token template prefix (``pack_shared_templates``: SFT with
             ``doc_grad``), forward + backward

Prints milliseconds per pass (median), the two forms' largest output difference, and which form the library
picks here. Ends with ``ratio: R`` = per segment / one call, on the pass the device spends its time in (encode);
exits 1 if the two forms' hidden states differ by 1e-2 or more (the comparison would be void).

    python benchmarks/packed_attention.py --quick              # CPU, 3 passes per form: about a minute
    python benchmarks/packed_attention.py --device cuda        # on a GPU
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import SMOLLM2_135M, describe  # noqa: E402

from searchr3.model import packing  # noqa: E402

FORMS = {"per segment": packing.attend_per_segment, "one call": packing.attend_in_one_call}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--budget", type=int, default=2048, help="tokens per packed row (default: 2048)")
    p.add_argument("--passes", type=int, default=6, help="timed passes per form and case (default: 6)")
    p.add_argument("--quick", action="store_true", help="3 passes per form and case")
    p.add_argument("--layers", type=int, default=SMOLLM2_135M["num_hidden_layers"],
                   help="decoder layers (default: the architecture's 30; fewer for a smoke run)")
    return p.parse_args(argv)


def register_forms() -> None:
    """Each form as its own attention implementation, so a model can be switched to one by name."""
    from transformers import AttentionInterface

    for name, attend in FORMS.items():
        def attention(module, query, key, value, attention_mask, scaling=None, _attend=attend, **kwargs):
            return _attend(query, key, value, kwargs["searchr3_layout"], scaling), None
        AttentionInterface.register(f"bench {name}", attention)


def build_model(device: str, dtype: torch.dtype, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**dict(SMOLLM2_135M, num_hidden_layers=layers))).to(device=device, dtype=dtype)


def document_lengths(budget: int, prefix: int) -> list[int]:
    """Lengths 256, 248, ... 200, then again, until the row is full (``token_budget_batches`` puts similar lengths
    together, longest first)."""
    lengths, used, length = [], prefix, 256
    while used + length <= budget:
        lengths.append(length)
        used += length
        length = 256 if length <= 200 else length - 8
    return lengths


def make_case(prefix: int, budget: int, vocab: int, device: str):
    """(ids, positions, layout) of one packed row: an optional shared prefix segment, then the documents."""
    lengths = document_lengths(budget, prefix)
    segments = ([prefix] if prefix else []) + lengths
    bounds = [0]
    for n in segments:
        bounds.append(bounds[-1] + n)
    ranges = ([None] + [[(0, prefix)]] * len(lengths)) if prefix else None
    positions = [t for n in segments[:1] for t in range(n)] if prefix else []
    positions += [prefix * bool(prefix) + t for n in lengths for t in range(n)]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, bounds[-1]), generator=g)
    layout = packing.segment_layout(bounds, ranges, device)
    return ids.to(device), torch.tensor([positions]).to(device), layout, len(lengths)


def run_pass(model, form: str, ids, pos, layout, grad: bool, device: str) -> tuple[float, torch.Tensor]:
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = f"bench {form}"
    try:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.set_grad_enabled(grad):
            hidden = model.model(input_ids=ids, position_ids=pos, searchr3_layout=layout).last_hidden_state
            if grad:
                hidden.float().pow(2).mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, hidden.detach()
    finally:
        config._attn_implementation = before


def main(argv=None) -> int:
    args = parse_args(argv)
    passes = 3 if args.quick else args.passes
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    register_forms()
    model = build_model(args.device, dtype, args.layers)
    print(f"# packed attention, {describe()}; device {args.device}, {dtype}, SmolLM2-135M architecture "
          f"({args.layers} layers, random weights), rows of about {args.budget} tokens, median of {passes} passes")
    print(f"{'pass':8} {'texts':>5} {'tokens':>6} {'per segment ms':>15} {'one call ms':>12} {'ratio':>6} "
          f"{'max |diff|':>10}  library picks")
    ratios, diffs = {}, []
    for case, prefix, grad in (("encode", 0, False), ("train", 30, True)):
        ids, pos, layout, texts = make_case(prefix, args.budget, model.config.vocab_size, args.device)
        times = {form: [] for form in FORMS}
        outputs = {}
        run_pass(model, "one call", ids, pos, layout, grad, args.device)  # warm-up: allocator, kernels
        for _ in range(passes):
            for form in FORMS:  # interleaved, so that drift in the machine's speed hits both
                seconds, outputs[form] = run_pass(model, form, ids, pos, layout, grad, args.device)
                times[form].append(seconds)
            model.zero_grad(set_to_none=True)
        ms = {form: statistics.median(t) * 1000 for form, t in times.items()}
        diff = (outputs["per segment"].float() - outputs["one call"].float()).abs().max().item()
        diffs.append(diff)
        picks = next(name for name, attend in FORMS.items() if attend is packing.attention_form(args.device))
        ratios[case] = ms["per segment"] / ms["one call"]
        print(f"{case:8} {texts:>5} {ids.shape[1]:>6} {ms['per segment']:>15.1f} {ms['one call']:>12.1f} "
              f"{ratios[case]:>6.2f} {diff:>10.2e}  {picks}")
    print(f"ratio: {ratios['encode']:.2f}")
    return 0 if max(diffs) < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
