"""Padded batches: token id lists to ``(input_ids, attention_mask, position_ids)`` with positions from the mask."""
from __future__ import annotations

import torch


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "right", device=None):
    """Pad id lists into ``(input_ids, attention_mask, position_ids)``; positions count real tokens only."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        else:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)
