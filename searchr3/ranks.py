"""Where this process stands in a distributed launch, from the variables ``accelerate launch`` / ``torchrun`` export
(``WORLD_SIZE``, ``RANK``): no torch, no process group. ``searchr3.train.distributed`` starts the group itself."""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched() -> bool:
    """Started by a distributed launcher with more than one process."""
    return world_size() > 1


def secondary_rank() -> bool:
    """A process of such a launch other than global rank 0: it trains alongside rank 0 but writes nothing (rank 0
    claims and writes the outputs, checkpoints and logs)."""
    return launched() and int(os.environ.get("RANK", "0") or 0) != 0
