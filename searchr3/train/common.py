"""Low-level pieces both trainers share: seeding, batch order, autocast, forward passes, checkpoints, logging, export.

The setup built from them (model, reference, optimizer, schedule) is ``trainer_setup.py``."""
from __future__ import annotations

import logging
import random
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from searchr3.files import atomic_file
from searchr3.model.embedder import last_token_positions, resolve_dtype

CHECKPOINT_FILE = "checkpoint.pt"
log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def batch_order(n_rows: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Row indices for every step: seeded epoch permutations, a pure function of its arguments."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(n_rows))
        rng.shuffle(epoch)
        order += epoch
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: ``precision`` parsed by the one parser, ``embedder.resolve_dtype`` (raises on
    anything but auto | fp32 | bf16)."""
    return resolve_dtype(precision, device) == torch.bfloat16


def autocast(enabled: bool, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def causal_lm(model):
    """The underlying ``*ForCausalLM`` (a peft model's LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_and_logits(model, ids, mask, pos, want_logits: bool):
    """One forward pass: final (normed) hidden states, and the LM logits when asked for."""
    lm = causal_lm(model)
    body = getattr(lm, lm.base_model_prefix)
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
    logits = lm.get_output_embeddings()(hidden) if want_logits else None
    return hidden, logits


def pool(hidden: torch.Tensor, ids: torch.Tensor, embed_id: int) -> torch.Tensor:
    pos = last_token_positions(ids, embed_id)
    vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos].float()
    return torch.nn.functional.normalize(vec, dim=-1)


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up to 1, then linear decay to ``floor`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return max(floor, 1.0 - (1.0 - floor) * (step - warmup) / span)


def fingerprint(config, model_checksum: str, rows: list[dict], extra=None) -> str:
    """Identity of a run: a checkpoint is resumed only by the run that wrote it."""
    import dataclasses
    import hashlib
    import json

    payload = json.dumps([dataclasses.asdict(config), model_checksum, rows, extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def save_checkpoint(folder: str | Path, state: dict) -> None:
    """Atomically and durably replace ``folder/checkpoint.pt``: a run resumed after a crash reads a whole one."""
    with atomic_file(Path(folder) / CHECKPOINT_FILE, "wb", durable=True) as handle:
        torch.save(state, handle)


def load_checkpoint(folder: str | Path) -> dict | None:
    path = Path(folder) / CHECKPOINT_FILE
    return torch.load(path, weights_only=False) if path.exists() else None


def restore(folder: str | Path, fingerprint: str, model, optimizer, scheduler) -> dict | None:
    """Load this run's checkpoint (same fingerprint) into model, optimizer, scheduler and the RNGs.

    Returns the checkpoint, or None to start afresh (no checkpoint, or one written by another run)."""
    ckpt = load_checkpoint(folder)
    if ckpt is None:
        return None
    if ckpt["state"].get("fingerprint") != fingerprint:
        log.warning("%s holds a checkpoint of a different run (config, start model or data changed); starting afresh", folder)
        return None
    load_trainable_state(model, ckpt["weights"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    log.info("resuming from %s at step %d", folder, ckpt["state"]["step"])
    return ckpt


def open_live(live_dir, resume: bool):
    """A DVCLive logger (``dvc plots show`` draws its curves), or None when ``live_dir`` is empty."""
    if not live_dir:
        return None
    from dvclive import Live

    return Live(str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def log_metrics(live, metrics: dict, step: int) -> None:
    if live is None:
        return
    live.step = step
    for k, v in metrics.items():
        live.log_metric(k, v)
    live.next_step()


def progress_bar(total: int, done: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", dynamic_ncols=True)


def export_model(model, tokenizer, out: str | Path, manifest: dict) -> Path:
    """Merge LoRA (if any) and write a plain ``save_pretrained`` folder the Embedder loads."""
    from searchr3.model.materialize import save_model

    plain = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    return save_model(plain.float(), tokenizer, out, manifest)


def clear_dir(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
