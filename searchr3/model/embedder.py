"""The embedder: a causal LM whose final hidden state at ``<|embed_token|>`` is the embedding.

Documents and direct queries are wrapped in a template ending in the token and encoded in one
forward pass. Reasoning queries first generate an analysis (batched, KV cache, left padding; a row
leaves the batch when it stops: ``generation.decode``) that stops at the embed token, EOS or
``max_new_tokens``; a trace that did not emit the token gets ``templates.fallback_suffix`` appended
(counted in ``QueryEmbeddings.fallbacks``, logged, never silent); then the whole prompt + trace is
encoded like a document.

Encoding packs texts end to end into one row per forward pass, longest first, up to
``model.batch_tokens`` tokens, with attention kept inside each text (``packing``): no padding, and a
text gives the same vector alone or packed. Models without packed attention get length-sorted padded
batches instead; position ids come from the attention mask there, so left or right padding agree too.

Tokenisation is public and is the one format for inference and training: ``tokenize_documents``,
``tokenize_queries`` and ``tokenize_reasoning_prompts`` give what the encoder embeds; ``reasoning_ids``
builds a reasoning query's sequence (prompt + generated, + the fallback suffix unless the generation ended
in the token) for inference and training alike; ``query_sequences`` gives the query side of a training row
with its labels (a reasoning query with a given trace: prompt + trace + fallback suffix, labelled from the
trace through the token; a direct query: labelled on the template's response, ``The embedding is
<|embed_token|>``), and ``Reasoning.sequences`` the generated traces labelled on the model's actions (the
generated tokens and an EOS stop; what GRPO trains).
"""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from searchr3.errors import ArtifactError, ConfigError
from searchr3.model.config import EMBED_TOKEN, IGNORE_INDEX, ModelConfig, Templates
from searchr3.model.generation import decode
from searchr3.model.loading import LOAD_LOCK
from searchr3.model.padding import pad_batch
from searchr3.model.materialize import model_checksum, verify_model
from searchr3.model.packing import (last_token_in_segments, pack, packed_attention, segment_layout, supports_packing,
                                    token_budget_batches)

log = logging.getLogger(__name__)


@dataclass
class QueryEmbeddings:
    vectors: np.ndarray  # (n, d) float32, rows L2-normalised
    emitted: list[bool] | None = None  # reasoning only: did the model emit the token itself?
    traces: list[str] | None = None  # reasoning only, when asked for: the generated analysis
    trace_tokens: list[int] | None = None  # reasoning only: generated tokens per query (without fallback suffix)

    @property
    def fallbacks(self) -> int:
        return 0 if self.emitted is None else sum(1 for e in self.emitted if not e)


@dataclass
class LabelledSequence:
    """Token ids of one model input and, aligned with them, the labels to train on (``IGNORE_INDEX`` elsewhere)."""

    ids: list[int]
    labels: list[int]


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_SPEEDUP = 1.3  # ``auto`` picks bf16 on a CPU without native bf16 only if its matmuls run this much faster


def auto_dtype(device: torch.device) -> torch.dtype:
    """The dtype ``precision: auto`` means: the policy, in one place (the precision parsers call it).

    bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16 or AMX). On other CPUs bf16 is emulated and
    its speed varies by machine (on a 2-core Cascade Lake, 4x slower than fp32; elsewhere reported 2x
    faster), so a short matmul probe decides, once per process: bf16 if it runs a model-shaped matmul
    ``BF16_SPEEDUP``x faster than fp32. bf16 embeddings agree with fp32 to cosine >= 0.99 on the default model.
    """
    if device.type == "cuda" or cpu_supports_bf16():
        return torch.bfloat16
    if device.type != "cpu":
        return torch.float32
    speedup = bf16_matmul_speedup()
    dtype = torch.bfloat16 if speedup >= BF16_SPEEDUP else torch.float32
    log.info("precision auto: %s (CPU without native bf16; bf16 matmul runs %.2fx the fp32 rate here)",
             "bf16" if dtype == torch.bfloat16 else "fp32", speedup)
    return dtype


@functools.lru_cache(maxsize=1)
def bf16_matmul_speedup(tokens: int = 512, hidden: int = 576, intermediate: int = 1536, repeats: int = 5) -> float:
    """bf16 over fp32 rate of a ``tokens x hidden @ hidden x intermediate`` matmul (best of ``repeats``, interleaved)."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(tokens, hidden, generator=gen), torch.randn(intermediate, hidden, generator=gen)
    pairs = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = {dtype: float("inf") for dtype in pairs}
    with torch.inference_mode():
        for dtype, (a, b) in pairs.items():
            torch.nn.functional.linear(a, b)  # warm-up
        for _ in range(repeats):
            for dtype, (a, b) in pairs.items():
                start = time.perf_counter()
                torch.nn.functional.linear(a, b)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ConfigError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return auto_dtype(device)


def split_template(template: str) -> tuple[str, str]:
    if template.count("{text}") != 1:
        raise ConfigError(f"template must contain {{text}} exactly once: {template!r}")
    prefix, suffix = template.split("{text}")
    return prefix, suffix


def last_token_positions(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Index of the last occurrence of ``token_id`` in each row; raises if a row lacks it."""
    hits = input_ids == token_id
    if not bool(hits.any(dim=1).all()):
        missing = (~hits.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {missing} contain no {EMBED_TOKEN}")
    idx = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(hits, idx, -1).max(dim=1).values


def pad_labelled(seqs: list[LabelledSequence], pad_id: int, device=None):
    """``pad_batch`` of the ids, plus the labels padded with ``IGNORE_INDEX``: ``(ids, mask, positions, labels)``."""
    ids, mask, positions = pad_batch([s.ids for s in seqs], pad_id, "right", device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, s in enumerate(seqs):
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
    return ids, mask, positions, labels


def embed_hidden(model, input_ids, attention_mask, position_ids, embed_id: int) -> torch.Tensor:
    """Final hidden state at the last embed token, L2-normalised, differentiable (used by training too)."""
    body = getattr(model, model.base_model_prefix, model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    pos = last_token_positions(input_ids, embed_id)
    vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos].float()
    return torch.nn.functional.normalize(vec, dim=-1)


class Embedder:
    def __init__(self, model, tokenizer, config: ModelConfig | None = None, path: str | Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or ModelConfig()
        self.path = Path(path) if path else None
        self.embed_token_id = tokenizer.convert_tokens_to_ids(EMBED_TOKEN)
        if self.embed_token_id is None or self.embed_token_id == tokenizer.unk_token_id:
            raise ArtifactError(path or "model", None, "no_embed_token",
                                f"tokenizer has no {EMBED_TOKEN}; run `searchr3 model materialize` first")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = {i for i in [tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)] if isinstance(i, int)}
        self.device = next(model.parameters()).device
        t = self.config.templates
        self._doc = self._encode_template(t.document, must_have_token=True)
        self._query = self._encode_template(t.query, must_have_token=True)
        self._reason = self._encode_template(t.reasoning, must_have_token=False)
        self._fallback = self._ids(t.fallback_suffix)
        self._fallback_text = t.fallback_suffix.replace(EMBED_TOKEN, "")
        if self.embed_token_id not in self._fallback:
            raise ConfigError(f"templates.fallback_suffix must contain {EMBED_TOKEN}")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, config: ModelConfig | None = None, precision: str | None = None,
                        device: str | None = None, base: str | Path | None = None, **overrides) -> "Embedder":
        """A model folder, or a delta folder (``searchr3.model.delta``: rebuilt on the base its manifest names,
        or on ``base``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from searchr3.model.delta import is_delta, load_delta

        config = config or ModelConfig()
        for k, v in overrides.items():
            if v is not None:
                setattr(config, k, v)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(precision or config.precision, dev)
        if is_delta(path):
            model, tokenizer, checksum = load_delta(path, base, dtype=dtype, device=dev)
            embedder = cls(model, tokenizer, config, path)
            embedder.__dict__["checksum"] = checksum
            return embedder
        verified = verify_model(path)  # before anything is read: a damaged file is exit 4 naming it
        with LOAD_LOCK:  # from_pretrained is not thread-safe (searchr3.model.loading)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev)
            tokenizer = AutoTokenizer.from_pretrained(path)
        embedder = cls(model, tokenizer, config, path)
        if verified is not None:
            embedder.__dict__["checksum"] = verified  # the cached_property, from the files just verified
        return embedder

    @cached_property
    def checksum(self) -> str:
        """sha256 of the weights: verified against the sealed manifest (``verify_model``), or recomputed for a
        folder without one; keys document-embedding caches and names the model an index was encoded by."""
        if self.path is None:
            raise ValueError("checksum needs a model loaded from a folder")
        return model_checksum(self.path)

    @property
    def doc_cap(self) -> int:
        """Documents are cut at this many tokens (the template is kept whole): the evaluation's stated cap."""
        return self.config.max_doc_tokens

    @property
    def settings_key(self) -> str:
        """Everything besides the weights that changes a document vector (for caches)."""
        return json.dumps({"template": self.config.templates.document, "max_doc_tokens": self.config.max_doc_tokens,
                           "dtype": str(self.model.dtype)}, sort_keys=True)

    # ---- tokenisation ---------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode_template(self, template: str, must_have_token: bool) -> tuple[list[int], list[int]]:
        prefix, suffix = split_template(template)
        prefix_ids, suffix_ids = self._ids(prefix), self._ids(suffix)
        if must_have_token and (not suffix_ids or suffix_ids[-1] != self.embed_token_id):
            raise ConfigError(f"template must end with {EMBED_TOKEN}: {template!r}")
        return prefix_ids, suffix_ids

    def _fill(self, template: tuple[list[int], list[int]], text: str, max_tokens: int) -> list[int]:
        body = self._ids(text.replace(EMBED_TOKEN, ""))[:max_tokens]
        return template[0] + body + template[1]

    def tokenize_documents(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Document template around each text (cut to ``max_tokens``, default ``config.max_doc_tokens``), ending in the token."""
        return [self._fill(self._doc, t, self.config.max_doc_tokens if max_tokens is None else max_tokens) for t in texts]

    def tokenize_queries(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Direct-query template around each text (cut to ``max_tokens``, default ``config.max_query_tokens``)."""
        return [self._fill(self._query, t, self.config.max_query_tokens if max_tokens is None else max_tokens) for t in texts]

    def tokenize_reasoning_prompts(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Reasoning prompt around each query text: what generation continues (no token yet)."""
        return [self._fill(self._reason, t, self.config.max_query_tokens if max_tokens is None else max_tokens) for t in texts]

    def trace_ids(self, trace: str, max_tokens: int | None = None) -> list[int]:
        """The tokens of a reasoning trace's text, without the embed token or a closing phrase it already ends
        with (the fallback suffix's text), cut to ``max_tokens``."""
        text = trace.replace(EMBED_TOKEN, "").rstrip()
        closing = self._fallback_text.strip()
        if closing and text.endswith(closing):
            text = text[: -len(closing)].rstrip()
        return self._ids(text)[:max_tokens]

    def reasoning_ids(self, prompt: list[int], generated: list[int]) -> list[int]:
        """What a reasoning query embeds: the prompt + the generated tokens, + the fallback suffix unless they end in the token.

        The one format: inference (``Reasoning.full_ids``) and training (``query_sequences``) both build it here.
        """
        if generated and generated[-1] == self.embed_token_id:
            return prompt + generated
        return prompt + generated + self._fallback

    def query_sequences(self, texts: list[str], traces: list[str | None], max_tokens: int | None = None,
                        max_trace_tokens: int | None = None) -> list[LabelledSequence]:
        """The query side of training rows, token for token what inference embeds, labelled on the assistant's response.

        With a trace: the reasoning prompt + the trace's tokens (cut to ``max_trace_tokens``) + the fallback suffix
        (``templates.fallback_suffix``, which ends in the token): exactly ``reasoning_ids`` of a generation that wrote
        this trace (whether or not it emitted the suffix itself). Labels: the trace and the suffix, through the token,
        so the model learns to close its analysis with the token. Without (``None``): the direct query template,
        labelled on its response (the template's tail after the part it shares with the reasoning template, e.g.
        ``The embedding is <|embed_token|>``; at least the token). Every row thus has a CE target ending in the token.
        """
        out = []
        for text, trace in zip(texts, traces, strict=True):
            if trace is None:
                ids = self.tokenize_queries([text], max_tokens)[0]
                cut = len(ids) - self.direct_response_tokens
                out.append(LabelledSequence(ids, [IGNORE_INDEX] * cut + ids[cut:]))
                continue
            prompt = self.tokenize_reasoning_prompts([text], max_tokens)[0]
            ids = self.reasoning_ids(prompt, self.trace_ids(trace, max_trace_tokens))
            out.append(LabelledSequence(ids, [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]))
        return out

    @cached_property
    def direct_response_tokens(self) -> int:
        """How many tokens at the end of the direct-query template are the assistant's response (labelled in SFT)."""
        query_tail, reason_tail = self._query[1], self._reason[1]
        shared = 0
        while shared < min(len(query_tail), len(reason_tail)) and query_tail[shared] == reason_tail[shared]:
            shared += 1
        return max(1, len(query_tail) - shared)

    def template_prefix_length(self, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` are a template's system prompt (reasoning, query or document), which
        every text of that template shares (training packs it once per batch, ``common.pack_with_prefixes``); 0 if
        none."""
        for prefix in sorted((self._reason[0], self._query[0], self._doc[0]), key=len, reverse=True):
            if prefix and ids[:len(prefix)] == prefix:
                return len(prefix)
        return 0

    @property
    def closing_tokens(self) -> int:
        """Length of the fallback suffix (the closing phrase through the token) in tokens."""
        return len(self._fallback)

    # ---- encoding -------------------------------------------------------------------------------
    @cached_property
    def packing(self) -> bool:
        """Whether encoding packs texts end to end (no padding); else padded, length-sorted batches."""
        return supports_packing(self.model)

    @torch.inference_mode()
    def forward_embeddings(self, batch: list[list[int]], padding_side: str = "right") -> np.ndarray:
        """One padded forward pass over ``batch`` (the path for models without packed attention)."""
        ids, mask, pos = pad_batch(batch, self.pad_id, padding_side, self.device)
        return embed_hidden(self.model, ids, mask, pos, self.embed_token_id).cpu().numpy()

    @torch.inference_mode()
    def forward_packed(self, batch: list[list[int]]) -> np.ndarray:
        """One forward pass over ``batch`` packed into a single row: no padding, attention per text."""
        ids, pos, cu = pack(batch, self.device)
        body = getattr(self.model, self.model.base_model_prefix, self.model)
        longest = max(len(s) for s in batch)
        layout = segment_layout(cu, device=self.device)  # once for every layer
        with packed_attention(self.model):
            hidden = body(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                          max_length_q=longest, max_length_k=longest, searchr3_layout=layout).last_hidden_state[0]
        vec = hidden[last_token_in_segments(ids[0], cu, self.embed_token_id)].float()
        return torch.nn.functional.normalize(vec, dim=-1).cpu().numpy()

    def encode_ids(self, seqs: list[list[int]], batch_size: int | None = None, progress: bool = False,
                   padding_side: str = "right", desc: str = "encode") -> np.ndarray:
        """Encode token-id sequences (each containing the token); results in input order.

        Packed: longest first, up to ``config.batch_tokens`` real tokens per forward pass. Models without
        packed attention: padded batches of ``batch_size`` (default ``config.batch_size``) texts, longest
        first, padded on ``padding_side``.
        """
        out = np.zeros((len(seqs), self.model.config.hidden_size), dtype=np.float32)
        if self.packing:
            batches = token_budget_batches([len(s) for s in seqs], self.config.batch_tokens)
            run = self.forward_packed
        else:
            bs = batch_size or self.config.batch_size
            order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
            batches = [order[i: i + bs] for i in range(0, len(order), bs)]

            def run(batch):
                return self.forward_embeddings(batch, padding_side)
        bar = _progress(len(seqs), desc) if progress else None
        for b in batches:
            out[b] = run([seqs[i] for i in b])
            if bar:
                bar.update(len(b))
        if bar:
            bar.close()
        return out

    def encode_documents(self, texts: list[str], batch_size: int | None = None, progress: bool = False,
                         padding_side: str = "right") -> np.ndarray:
        return self.encode_ids(self.tokenize_documents(texts), batch_size, progress, padding_side, "documents")

    def encode_queries(self, texts: list[str], reasoning: bool = False, return_traces: bool = False,
                       batch_size: int | None = None, progress: bool = False, temperature: float | None = None,
                       max_time: float | None = None) -> QueryEmbeddings:
        """``max_time`` (seconds, reasoning only) caps each generation batch; a cut trace gets the fallback suffix."""
        if not reasoning:
            return QueryEmbeddings(self.encode_ids(self.tokenize_queries(texts), batch_size, progress, desc="queries"))
        gen = self.generate_reasoning(texts, batch_size=batch_size, progress=progress, temperature=temperature,
                                      max_time=max_time)
        vectors = self.encode_ids(gen.full_ids, batch_size, desc="traces")
        if gen.fallbacks:
            log.info("reasoning: %d of %d traces did not emit %s; appended the fallback suffix",
                     gen.fallbacks, len(texts), EMBED_TOKEN)
        return QueryEmbeddings(vectors, emitted=gen.emitted, traces=gen.traces if return_traces else None,
                               trace_tokens=[len(g) for g in gen.generated])

    # ---- reasoning ------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_reasoning(self, texts: list[str], batch_size: int | None = None, progress: bool = False,
                           temperature: float | None = None, max_new_tokens: int | None = None,
                           max_time: float | None = None, share_prompts: bool = True,
                           no_repeat_ngram: int | None = None) -> "Reasoning":
        """Generate an analysis per query; returns prompt ids, generated ids and full ids ending in the token.

        ``max_time`` (seconds) stops each batch's generation when it runs out (a time budget for serving).
        ``share_prompts``: a query repeated in ``texts`` (GRPO's group) gets one prompt pass (``generation.decode``).
        ``no_repeat_ngram``: ``None`` takes ``model.no_repeat_ngram`` (evaluation, serving); the training samplers pass 0.
        """
        prompts = self.tokenize_reasoning_prompts(texts)
        bs = batch_size or max(self.config.batch_size, 1)
        temp = self.config.temperature if temperature is None else temperature
        max_new = max_new_tokens or self.config.max_new_tokens
        ngram = self.config.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram
        generated: list[list[int]] = [[] for _ in texts]
        stops: list[int | None] = [None for _ in texts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        bar = _progress(len(texts), "reasoning") if progress else None
        stop = self.eos_ids | {self.embed_token_id}
        for start in range(0, len(order), bs):
            b = order[start: start + bs]
            out = decode(self.model, [prompts[i] for i in b], self.pad_id, stop, max_new, temp, max_time=max_time,
                         share_prompts=share_prompts, no_repeat_ngram=ngram)
            for new_ids, i in zip(out, b):
                generated[i], stops[i] = self._cut_trace(new_ids)
            if bar:
                bar.update(len(b))
        if bar:
            bar.close()
        return Reasoning(self, prompts, generated, stops)

    def _cut_trace(self, new_ids: list[int]) -> tuple[list[int], int | None]:
        """Generated tokens up to and including the embed token, or up to (excluding) the first EOS; and the EOS
        id the trace stopped on (``None`` when it emitted the token or ran to the length cap)."""
        kept = []
        for t in new_ids:
            if t == self.embed_token_id:
                kept.append(t)
                return kept, None
            if t in self.eos_ids:
                return kept, t
            kept.append(t)
        return kept, None


class Reasoning:
    """Generated traces for a batch of queries, with the full sequences to encode."""

    def __init__(self, embedder: Embedder, prompts: list[list[int]], generated: list[list[int]],
                 stops: list[int | None] | None = None):
        tok = embedder.embed_token_id
        self.prompts = prompts
        self.generated = generated
        self.stops = stops if stops is not None else [None] * len(generated)  # EOS id a trace stopped on, else None
        self.emitted = [bool(g) and g[-1] == tok for g in generated]
        self.full_ids = [embedder.reasoning_ids(p, g) for p, g in zip(prompts, generated)]
        self.traces = [embedder.tokenizer.decode([t for t in g if t != tok], skip_special_tokens=True) for g in generated]

    @property
    def fallbacks(self) -> int:
        return sum(1 for e in self.emitted if not e)

    def sequences(self) -> list[LabelledSequence]:
        """Each full sequence (prompt + generated, + fallback suffix), labelled on the model's actions.

        The actions are the generated tokens (with the token when the model emitted it) and the stop: a trace that
        stopped on EOS has that EOS as the label of the first fallback position (the logits there are the ones
        EOS was sampled from; the input there is the suffix, as inference embeds it), so stopping gets credit
        like any token. The rest of the suffix is not the model's output and is not labelled.
        """
        out = []
        for prompt, generated, full, stop in zip(self.prompts, self.generated, self.full_ids, self.stops):
            tail = len(full) - len(prompt) - len(generated)
            stop_label = [stop] if stop is not None and tail else []
            labels = [IGNORE_INDEX] * len(prompt) + list(generated) + stop_label
            out.append(LabelledSequence(list(full), labels + [IGNORE_INDEX] * (len(full) - len(labels))))
        return out


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", dynamic_ncols=True)
