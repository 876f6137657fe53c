"""Low-level pieces both trainers share: seeding, batch order, autocast, forward passes, checkpoints, logging, export.

The setup built from them (model, reference, optimizer, schedule) is ``trainer_setup.py``."""
from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from searchr3.files import atomic_file
from searchr3.model.embedder import last_token_positions, resolve_dtype
from searchr3.model.packing import last_token_in_segments, pack, packed_attention, segment_layout

CHECKPOINT_FILE = "checkpoint.pt"  # the old single-file format: never loaded, removed by the next save
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


def batch_order(n_rows: int, batch_size: int, steps: int, seed: int, repeats: list[int] | None = None) -> list[list[int]]:
    """Row indices for every step: seeded epoch permutations, a pure function of its arguments.

    ``repeats[i]`` (default 1) is how many times row ``i`` appears per epoch (oversampling). No batch holds a row
    twice: a row that would repeat inside a batch (at an epoch boundary, or an oversampled row) waits for the next
    batch, which takes it first. A batch is never larger than the number of distinct rows.
    """
    counts = repeats if repeats is not None else [1] * n_rows
    if len(counts) != n_rows or any(c < 0 for c in counts):
        raise ValueError(f"repeats must give a count >= 0 for each of the {n_rows} rows")
    epoch = [i for i, c in enumerate(counts) for _ in range(c)]
    width = min(batch_size, len(set(epoch)))
    if width < 1:
        raise ValueError("no rows to order")
    rng = random.Random(seed)
    stream: list[int] = []
    waiting: list[int] = []
    batches: list[list[int]] = []
    while len(batches) < steps:
        batch: list[int] = []
        queue = waiting
        waiting = []
        while len(batch) < width:
            if not queue:
                if not stream:
                    stream = epoch[:]
                    rng.shuffle(stream)
                    stream.reverse()  # pop() from the end = take in shuffled order
                queue = [stream.pop()]
            row = queue.pop(0)
            if row in batch:
                waiting.append(row)
            else:
                batch.append(row)
        waiting += queue
        batches.append(batch)
    return batches


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


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head applied to final hidden states (e.g. only the positions that have targets)."""
    return causal_lm(model).get_output_embeddings()(hidden)


# ---- packed passes: sequences end to end in one row, no padding (``searchr3.model.packing``) ----------------
#
# The padded passes above spend FLOPs on padding and, for LM losses, run the LM head (vocabulary-wide) on every
# position after the earliest target. A packed pass runs the body on the real tokens only (attention per
# sequence) and the LM head only where a target is; the losses then see "compact" tensors: one row whose
# position ``i`` holds the logits that predict target ``i + 1`` (the shift convention of the losses, so they are
# used unchanged; the last row is a zero hidden state whose logits are never read).

@dataclass
class Packed:
    """Sequences laid end to end: ``ids``/``pos`` (1, P), ``cu`` (n + 1,) segment bounds, ``longest`` length;
    ``prefix`` (optional, per segment): the ``(start, end)`` ranges of the segments it continues, and ``where``
    (per sequence): the packed position of each of its tokens (``pack_with_prefixes``; else sequence = segment)."""

    ids: torch.Tensor
    pos: torch.Tensor
    cu: torch.Tensor
    longest: int
    prefix: list[list[tuple[int, int]] | None] | None = None
    where: list[list[int]] | None = None

    @property
    def starts(self) -> list[int]:
        return self.cu[:-1].tolist()


def pack_sequences(seqs: list[list[int]], device=None) -> Packed:
    ids, pos, cu = pack(seqs, device)
    return Packed(ids, pos, cu, max(len(s) for s in seqs))


def pack_with_prefixes(seqs: list[list[int]], splits: list[list[int]], device=None) -> Packed:
    """Pack sequences that share leading parts once per distinct part: ``splits[i]`` are cut points of sequence
    ``i`` (e.g. the end of its template's system prompt, the end of its query's prompt; any order, and 0, repeats
    and cuts at or past its end are ignored); the tokens before each cut form a segment that every sequence with
    the same tokens up to that cut shares (SFT: the template; GRPO: the template, then a group's prompt). A
    segment attends to the segments before it in its sequences and causally to itself; positions continue
    theirs. The hidden states equal each sequence's alone.

    ``Packed.where[i][t]``: the packed position of token ``t`` of sequence ``i`` (where its hidden state is)."""
    segments: list[list[int]] = []
    firsts: list[int] = []
    ranges: list[list[tuple[int, int]]] = []
    found: dict[tuple[int, ...], int] = {}  # tokens up to a cut -> its segment
    used = 0
    where: list[list[int]] = []
    for seq, cuts in zip(seqs, splits, strict=True):
        bounds = sorted({c for c in cuts if 0 < c < len(seq)})
        at: list[int] = []
        before: list[tuple[int, int]] = []
        for lo, hi in zip([0, *bounds], [*bounds, len(seq)]):
            key = tuple(seq[:hi])
            shared = hi < len(seq)  # the last part is the sequence's own, even if another sequence equals it
            if not shared or key not in found:
                segments.append(seq[lo:hi])
                firsts.append(lo)
                ranges.append(list(before))
                if shared:
                    found[key] = len(segments) - 1
                start, used = used, used + hi - lo
            else:
                n = found[key]
                start = sum(len(x) for x in segments[:n])
            at += range(start, start + hi - lo)
            before.append((start, start + hi - lo))
        where.append(at)
    lengths = [len(x) for x in segments]
    cu = torch.zeros(len(segments) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    ids = torch.tensor([t for x in segments for t in x], dtype=torch.long).unsqueeze(0)
    pos = torch.tensor([f + t for f, x in zip(firsts, segments) for t in range(len(x))], dtype=torch.long).unsqueeze(0)
    prefix = [r or None for r in ranges]
    return Packed(ids.to(device), pos.to(device), cu.to(device), max(lengths), prefix if any(prefix) else None, where)


def pack_shared_templates(seqs: list[list[int]], embedder, device=None) -> Packed:
    """``pack_with_prefixes`` with each sequence's template system prompt (``Embedder.template_prefix_length``)
    packed once: for sequences that end in the embed token (pooling reads the last one of each segment)."""
    return pack_with_prefixes(seqs, [[embedder.template_prefix_length(s)] for s in seqs], device)


def packed_hidden(model, packed: Packed) -> torch.Tensor:
    """Final (normed) hidden states of every packed token, ``(P, hidden)``; attention stays inside each sequence
    (and its prefix, ``Packed.prefix``)."""
    lm = causal_lm(model)
    body = getattr(lm, lm.base_model_prefix)
    layout = segment_layout(packed.cu, packed.prefix, packed.ids.device)  # once for every layer
    with packed_attention(lm):
        out = body(input_ids=packed.ids, position_ids=packed.pos, cu_seq_lens_q=packed.cu, cu_seq_lens_k=packed.cu,
                   max_length_q=packed.longest, max_length_k=packed.longest, searchr3_layout=layout)
    return out.last_hidden_state[0]


def packed_pool(hidden: torch.Tensor, packed: Packed, embed_id: int) -> torch.Tensor:
    """L2-normalised hidden state at the last ``embed_id`` of each packed sequence, ``(n, hidden)`` float32."""
    if packed.where is None:
        last = last_token_in_segments(packed.ids[0], packed.cu, embed_id)
    else:
        ids = packed.ids[0].tolist()
        found = [max((p for p in at if ids[p] == embed_id), default=-1) for at in packed.where]
        if min(found) < 0:
            raise ValueError(f"sequences {[i for i, p in enumerate(found) if p < 0]} contain no embed token")
        last = torch.tensor(found, dtype=torch.long, device=hidden.device)
    return torch.nn.functional.normalize(hidden[last].float(), dim=-1)


def next_token_targets(labels: list[list[int]], starts: list[int]) -> tuple[list[int], list[int]]:
    """For aligned labels of packed sequences (sequence ``i`` starts at ``starts[i]``): the packed positions whose
    logits predict a labelled token, and those tokens (the losses' shift: position ``t`` predicts ``labels[t + 1]``)."""
    from searchr3.model.config import IGNORE_INDEX

    positions, targets = [], []
    for start, row in zip(starts, labels, strict=True):
        for t in range(len(row) - 1):
            if row[t + 1] != IGNORE_INDEX:
                positions.append(start + t)
                targets.append(row[t + 1])
    return positions, targets


def compact_labels(targets: list[int], device=None) -> torch.Tensor:
    """``(1, N + 1)`` labels for compact logits: ignore, then the targets (logits row ``i`` predicts ``i + 1``)."""
    from searchr3.model.config import IGNORE_INDEX

    return torch.tensor([[IGNORE_INDEX] + list(targets)], dtype=torch.long, device=device)


def compact_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """``(1, N + 1, vocab)`` LM logits of ``hidden`` (N, d) rows plus a zero row (never a prediction, see above)."""
    return lm_logits(model, torch.cat([hidden, hidden.new_zeros(1, hidden.shape[-1])]))[None]


class PhaseTimer:
    """Wall seconds per named phase, summed over the calls: ``with timer("score"): ...``; ``phase(timer, name)``
    is a no-op when ``timer`` is None (the loops pass one only when measuring)."""

    def __init__(self):
        self.started, self.seconds = time.perf_counter(), {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"time/{p}_s": s for p, s in self.seconds.items()} | {"time/step_s": time.perf_counter() - self.started}


def phase(timer: PhaseTimer | None, name: str):
    return timer(name) if timer is not None else nullcontext()


def first_target_position(labels: torch.Tensor) -> int:
    """The position before the earliest labelled token of any row (logits before it predict nothing trained)."""
    from searchr3.model.config import IGNORE_INDEX

    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return max(int(labelled[0]) - 1, 0) if len(labelled) else 0


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


# ---- checkpoints ---------------------------------------------------------------------------------
#
# A checkpoint is two files in the checkpoint folder, written in this order (each atomically and durably):
#   checkpoint-<step>.pt    torch.save of the state, holding only tensors and plain Python values (numpy arrays
#                           are stored as tagged uint8 tensors, :func:`to_safe`), so it loads with
#                           ``weights_only=True``: no pickle of an arbitrary class, no code runs on load;
#   checkpoint-<step>.json  the commit record: format, run fingerprint, step, the .pt file's size and sha256.
# A loader reads the JSON first, skips a checkpoint of another run (fingerprint) and verifies size and sha256
# before ``torch.load`` sees a byte. The previous complete checkpoint is kept until the new one is committed,
# so a truncated or damaged latest one falls back to it. A ``checkpoint.pt`` without a commit record (the old
# single-file format, or a planted file) is never unpickled.

CHECKPOINT_FORMAT = 2
_CKPT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2  # the newest and the one before it (the fallback)


def to_safe(value):
    """``value`` with numpy arrays as ``{"__ndarray__": uint8 tensor, "dtype", "shape"}`` (bit-exact) and numpy
    scalars as Python numbers, so ``torch.load(weights_only=True)`` can read it back."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("a checkpoint cannot hold a numpy object array")
        raw = torch.frombuffer(bytearray(np.ascontiguousarray(value).tobytes()), dtype=torch.uint8) if value.size \
            else torch.zeros(0, dtype=torch.uint8)
        return {"__ndarray__": raw, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_safe(v) for v in value)
    return value


def from_safe(value):
    """The inverse of :func:`to_safe`."""
    if isinstance(value, dict):
        if "__ndarray__" in value and set(value) == {"__ndarray__", "dtype", "shape"}:
            raw = value["__ndarray__"].numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        return {k: from_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_safe(v) for v in value)
    return value


def _ckpt_paths(folder: Path, step: int) -> tuple[Path, Path]:
    stem = f"{_CKPT_PREFIX}{step:06d}"
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def checkpoint_steps(folder: str | Path) -> list[int]:
    """Steps of the committed checkpoints in ``folder`` (those with a commit record), newest first."""
    steps = []
    for meta in Path(folder).glob(f"{_CKPT_PREFIX}*.json"):
        try:
            steps.append(int(meta.stem[len(_CKPT_PREFIX):]))
        except ValueError:
            continue
    return sorted(steps, reverse=True)


def save_checkpoint(folder: str | Path, state: dict) -> None:
    """Write ``state`` (``state["state"]`` holds ``step`` and ``fingerprint``) as this step's checkpoint, commit
    it, then drop all but the :data:`KEEP_CHECKPOINTS` newest. A crash at any point leaves the previous
    committed checkpoint loadable. A full disk is an ``OSError`` (ENOSPC) naming the file."""
    import errno
    import os

    from searchr3.files import write_json_atomic
    from searchr3.integrity import sha256_file

    folder = Path(folder)
    step, fp = int(state["state"]["step"]), state["state"].get("fingerprint")
    pt, meta = _ckpt_paths(folder, step)
    try:
        with atomic_file(pt, "wb", durable=True) as handle:
            torch.save(to_safe(state), handle)
    except RuntimeError as err:  # torch's writer wraps the OSError: "[enforce fail at inline_container.cc]"
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        code = errno.ENOSPC if free < 64 << 20 else errno.EIO
        raise OSError(code, f"{os.strerror(code)} while writing a checkpoint ({free >> 20} MiB free)", str(pt)) from err
    write_json_atomic(meta, {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "step": step, "file": pt.name,
                             "size": pt.stat().st_size, "sha256": sha256_file(pt)}, durable=True)
    for old in checkpoint_steps(folder)[KEEP_CHECKPOINTS:]:
        for path in _ckpt_paths(folder, old)[::-1]:  # the commit record first
            path.unlink(missing_ok=True)
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)  # the old single-file format is never read


def load_checkpoint(folder: str | Path, fingerprint: str | None = None) -> dict | None:
    """The newest committed checkpoint of ``folder`` whose files verify (and whose run is ``fingerprint``, when
    given); None when there is none. A damaged or truncated one is skipped with a warning (the previous one is
    used). Nothing is unpickled before its fingerprint and sha256 are checked, and then only with
    ``weights_only=True``: a checkpoint that needs anything else raises ArtifactError (exit 4), never runs code."""
    import json

    from searchr3.errors import ArtifactError
    from searchr3.integrity import sha256_file

    folder = Path(folder)
    if (folder / CHECKPOINT_FILE).exists():
        log.warning("%s: ignored (a checkpoint without a commit record: the old format or not written by searchr3; "
                    "it is never unpickled)", folder / CHECKPOINT_FILE)
    for step in checkpoint_steps(folder):
        pt, meta_path = _ckpt_paths(folder, step)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable commit record (%s); trying an older checkpoint", meta_path, err)
            continue
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            log.warning("%s holds a checkpoint of a different run (config, start model or data changed); "
                        "it is not resumed", meta_path)
            continue
        if not pt.is_file() or pt.stat().st_size != meta.get("size") or sha256_file(pt) != meta.get("sha256"):
            log.warning("%s is missing, truncated or damaged (size/sha256 differ from %s); falling back to the "
                        "previous checkpoint", pt, meta_path.name)
            continue
        try:
            return from_safe(torch.load(pt, weights_only=True, map_location="cpu"))
        except Exception as err:  # noqa: BLE001 - the unpickler's refusal, whatever its class
            raise ArtifactError(pt, None, "unsafe_checkpoint",
                                "it holds objects that a weights-only load refuses (not written by searchr3, or "
                                f"tampered with): {' '.join(str(err).split())[:160]}; delete the checkpoint "
                                "folder to start afresh") from err
    return None


def restore(folder: str | Path, fingerprint: str, model, optimizer, scheduler) -> dict | None:
    """Load this run's checkpoint (same fingerprint) into model, optimizer, scheduler and the RNGs.

    Returns the checkpoint, or None to start afresh (no checkpoint, or only ones written by another run)."""
    ckpt = load_checkpoint(folder, fingerprint)
    if ckpt is None:
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
