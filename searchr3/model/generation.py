"""Batched decoding with a KV cache where a finished row leaves the batch at once.

``transformers``' ``generate`` keeps every row in the batch until the last one stops (finished rows
are fed padding and still cost a full forward step), and runs its logits-processor and stopping
machinery every step. Reasoning traces stop at very different lengths (the embed token after a
dozen tokens, or the length cap), so here a row that emits a stop token is dropped from the batch
and from the cache the same step, and the loop ends when no row is left.

Identical prompts (GRPO samples a group of traces per query) are run through the prompt pass once; their
cache rows and first logits are then copied per prompt (``share_prompts``).

Decoding is greedy at ``temperature == 0``, else plain sampling from ``softmax(logits / temperature)``
(``generate``'s ``do_sample=True, top_k=0, top_p=1.0``). Greedy output matches ``generate`` token for
token; sampled output follows the same distribution (not the same draws: finished rows draw nothing).

``no_repeat_ngram`` = n > 0 bans, per row, every token that would repeat an n-gram the row has already generated
(``generate``'s ``no_repeat_ngram_size``, counted over the generated tokens only, not the prompt): a small model's
greedy trace that falls into a loop (the same line again and again up to the length cap, never closing) is made
to write something else, and closing is one of the things it can write.
"""
from __future__ import annotations

import time

import torch

from searchr3.model.padding import pad_batch


def decode(model, prompts: list[list[int]], pad_id: int, stop_ids: set[int], max_new_tokens: int,
           temperature: float = 0.0, max_time: float | None = None, share_prompts: bool = True,
           no_repeat_ngram: int = 0) -> list[list[int]]:
    """Generate up to ``max_new_tokens`` per prompt; each list ends at (and includes) its first stop token.

    ``max_time`` (seconds, a serving budget): no new step starts once it has passed; rows then end where they are.
    ``share_prompts``: one prompt pass per distinct prompt (the rows of a repeated prompt copy its cache).
    """
    from transformers import DynamicCache

    deadline = None if max_time is None else time.monotonic() + max_time
    device = next(model.parameters()).device
    generated: list[list[int]] = [[] for _ in prompts]
    if not prompts or max_new_tokens <= 0:
        return generated
    distinct = list(dict.fromkeys(map(tuple, prompts))) if share_prompts else [tuple(p) for p in prompts]
    ids, mask, pos = pad_batch([list(p) for p in distinct], pad_id, "left", device)
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    rows = torch.arange(len(prompts), device=device)  # batch row -> prompt index
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    if len(distinct) < len(prompts):  # copy each distinct prompt's cache row and logits to the rows that repeat it
        where = {p: i for i, p in enumerate(distinct)}
        source = torch.tensor([where[tuple(p)] for p in prompts], device=device)
        cache.batch_select_indices(source)
        logits, mask, pos = logits[source], mask[source], pos[source]
    next_pos = pos[:, -1:] + 1
    for step in range(max_new_tokens):
        if no_repeat_ngram > 0:
            logits = ban_repeated_ngrams(logits, [generated[r] for r in rows.tolist()], no_repeat_ngram)
        token = _pick(logits, temperature)
        for row, t in zip(rows.tolist(), token.tolist()):
            generated[row].append(t)
        if step == max_new_tokens - 1 or (deadline is not None and time.monotonic() >= deadline):
            break
        going = ~torch.isin(token, stop)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().flatten()
            cache.batch_select_indices(keep)
            rows, token, mask, next_pos = rows[keep], token[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        next_pos = next_pos + 1
    return generated


def banned_tokens(history: list[int], n: int) -> set[int]:
    """Tokens that would complete an ``n``-gram already in ``history`` (given its last ``n - 1`` tokens)."""
    if n <= 0 or len(history) < n - 1:
        return set()
    if n == 1:
        return set(history)
    tail = history[len(history) - n + 1:]
    return {history[i + n - 1] for i in range(len(history) - n + 1) if history[i: i + n - 1] == tail}


def ban_repeated_ngrams(logits: torch.Tensor, histories: list[list[int]], n: int) -> torch.Tensor:
    """``logits`` (rows, vocab) with ``-inf`` at each row's ``banned_tokens``; unchanged when nothing is banned."""
    hits = [(row, t) for row, history in enumerate(histories) for t in banned_tokens(history, n)]
    if not hits:
        return logits
    logits = logits.clone()
    rows, tokens = zip(*hits)
    logits[list(rows), list(tokens)] = float("-inf")
    return logits


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)
