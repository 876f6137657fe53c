"""Training on N processes (DDP semantics) with the process group that ``accelerate launch`` / ``torchrun`` set up.

The trainers stay one readable loop; what differs on N ranks lives here, and every call is a no-op on one process
(``world == 1``), so ``python -m searchr3 stage sft`` and ``accelerate launch --num_processes N -m searchr3 stage sft``
run the same code:

- :func:`init`: the rank, world size and device from accelerate's ``PartialState`` (which reads the variables its
  launcher or ``torchrun`` exports and starts the process group: gloo on CPU, NCCL on GPUs), or one process.
- :meth:`Dist.split`: a rank's contiguous share of a global batch (rank ``r`` gets rows ``r*B/N .. (r+1)*B/N - 1``),
  so gathering across ranks restores the global row order.
- :meth:`Dist.gather`: ``torch.distributed.nn.functional.all_gather`` (with gradient: its backward sums each rank's
  gradient into the rank that produced the slice), the in-batch negatives pattern of sentence-transformers'
  ``gather_across_devices``. A rank then computes InfoNCE over the *global* batch: with gradients averaged over
  ranks afterwards, 2 ranks x B rows give the gradient of 1 rank x 2B rows.
- :meth:`Dist.token_share`: a token-mean loss (CE, KL) computed on a rank's rows, rescaled so that the average over
  ranks of the rank losses' gradients is the gradient of the global token mean (ranks hold different token counts).
- :meth:`Dist.sync_gradients`: one all-reduce (mean) of the trainable gradients per optimizer step. Not DDP's
  module wrapper: our trainers run several forward passes of the same body per step (queries, documents, the
  reference with the LoRA adapter disabled), which DDP's reducer does not support; the result is the same
  averaged gradient, reduced once after gradient accumulation (as DDP's ``no_sync`` would).
- :meth:`Dist.broadcast_parameters`: rank 0's weights to every rank at the start (identical starts by construction).
- :attr:`Dist.is_main`: checkpoints, DVCLive, progress bars and the exported model are written by rank 0 only;
  :meth:`Dist.barrier` makes the others wait for them.

Multi-node: every rank must see the checkpoint folder (a shared filesystem), since all ranks resume from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from searchr3.ranks import launched


@dataclass
class TrainConfig:
    """``train:`` section of params.yaml: how many processes the training stages (``sft``, ``rl``) run on.

    With ``processes > 1``, ``searchr3 stage sft|rl`` and the Prefect tasks start themselves under
    ``accelerate launch --num_processes N`` (:func:`searchr3.launch.run_stage`); one process per GPU, or gloo
    processes on a CPU machine. The global batch (``sft.batch_size``, ``rl.queries_per_step``) is split across them,
    so results do not depend on N (``sft.batch_size / sft.grad_accum`` must divide by N). Several machines: run ``accelerate launch`` yourself on each (docs/scale-out.md).
    """

    processes: int = 1  # processes on this machine (1 = no launcher; N GPUs: N)
    accelerate_config: str = ""  # an `accelerate config` file for anything else (multi-node, ports); "" = none


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes (``world == 1``: no process group)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ---- data ------------------------------------------------------------------------------------------
    def split(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (a global batch); the length must divide by ``world``."""
        if not self.active:
            return items
        if len(items) % self.world:
            raise ValueError(f"a global batch of {len(items)} rows does not split evenly over {self.world} processes: "
                             f"make sft.batch_size (and batch_size / grad_accum) and rl.queries_per_step multiples "
                             f"of train.processes")
        share = len(items) // self.world
        return items[self.rank * share:(self.rank + 1) * share]

    # ---- collectives -----------------------------------------------------------------------------------
    def gather(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's ``tensor`` concatenated along dim 0 in rank order; differentiable when it requires grad."""
        if tensor is None or not self.active:
            return tensor
        import torch.distributed as dist

        if tensor.requires_grad:
            import warnings

            from torch.distributed.nn.functional import all_gather

            with warnings.catch_warnings():  # "deprecated" for a private successor; it is the public autograd gather
                warnings.simplefilter("ignore", FutureWarning)
                return torch.cat(all_gather(tensor), dim=0)
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (a float)."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item())

    def token_share(self, local_tokens: int) -> tuple[float, int]:
        """``(scale, global_tokens)`` for a token-mean loss on this rank's ``local_tokens``: multiply the rank's loss
        by ``scale = world * local / global`` so the mean over ranks of the gradients equals the global token mean's."""
        if not self.active:
            return 1.0, local_tokens
        total = int(round(self.sum(local_tokens)))
        return (self.world * local_tokens / total if total else 0.0), total

    def token_shares(self, local: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
        """For token-mean loss terms (``{"ce": n, "kl": n}``: supervised tokens on this rank): ``(scale, global)``.
        Multiplying a rank's term by ``scale = world * local / global`` makes the mean over ranks of the gradients the
        gradient of the global token mean (ranks hold different numbers of tokens). One all-reduce for all terms."""
        if not self.active:
            return {}, dict(local)
        import torch.distributed as dist

        names = sorted(local)
        t = torch.tensor([float(local[n]) for n in names], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        total = {n: int(round(v)) for n, v in zip(names, t.tolist())}
        return {n: (self.world * local[n] / total[n] if total[n] else 0.0) for n in names}, total

    def global_components(self, components: dict[str, float], local: dict[str, int], total: dict[str, int],
                          weights: dict[str, float]) -> dict[str, float]:
        """A loss's logged terms over the global batch: token-mean terms (``local``/``total`` token counts) averaged
        by tokens over ranks, the others (computed on gathered tensors) as they are; ``total`` is the weighted sum."""
        if not self.active:
            return components
        import torch.distributed as dist

        names = sorted(local)
        t = torch.tensor([components.get(n, 0.0) * local[n] for n in names], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        out = {k: v for k, v in components.items() if k not in local}
        out |= {n: v / total[n] for n, v in zip(names, t.tolist()) if total[n]}
        return out | {"total": sum(weights.get(k, 0.0) * v for k, v in out.items())}

    def sync_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks (one flat all-reduce); a missing gradient counts as 0."""
        if not self.active:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.active:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def gather_objects(self, obj) -> list:
        """Every rank's picklable ``obj``, in rank order (one process: ``[obj]``)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def encode_split(self, encode_fn):
        """``encode_fn`` (texts -> (n, d) array) with the work split: every rank calls it with the same texts, encodes
        its contiguous share, and gets every rank's vectors back in order (the same array on every rank). The refresh
        budget of the live index is split this way while every rank applies the same refresh."""
        if not self.active:
            return encode_fn
        import numpy as np

        def split(texts):
            texts = list(texts)
            bounds = [round(i * len(texts) / self.world) for i in range(self.world + 1)]
            mine = texts[bounds[self.rank]:bounds[self.rank + 1]]
            parts = self.gather_objects(np.asarray(encode_fn(mine), dtype=np.float32) if mine else None)
            return np.concatenate([p for p in parts if p is not None])
        return split

    def seed_step(self, seed: int, step: int) -> None:
        """On N processes: seed torch's generator from (seed, step, rank) before sampling, so ranks sample different
        traces and a resumed run samples what the uninterrupted one did (each rank's generator history differs: the
        number of tokens drawn depends on when its traces stop). No-op on one process."""
        if self.active:
            torch.manual_seed((seed * 1_000_003 + step) * 1_009 + self.rank)

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks that report it (ranks hold equal shares of a step's traces)."""
        if not self.active:
            return metrics
        every = self.gather_objects(metrics)
        keys = dict.fromkeys(k for m in every for k in m)
        return {k: sum(m[k] for m in every if k in m) / sum(1 for m in every if k in m) for k in keys}

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (picklable) on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = Dist()


def init() -> Dist:
    """This process's place: one process unless started by a distributed launcher with WORLD_SIZE > 1, in which case
    accelerate's ``PartialState`` starts the process group (gloo on CPU, NCCL on CUDA) and sets this rank's GPU."""
    if not launched():
        return SINGLE
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # no CUDA: gloo (accelerate's MULTI_CPU)
    return Dist(rank=state.process_index, world=state.num_processes)


def launch_command(processes: int, argv: list[str], *, config_file: str = "", machines: int = 1,
                   machine_rank: int = 0, main_address: str | None = None, main_port: int | None = None,
                   python: str | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``python -m <argv>`` on ``processes`` processes per machine.

    More than one process uses accelerate's multi-process launcher (``--multi_gpu``: torchrun underneath, one process
    per GPU); on a machine without CUDA the processes find no GPU and :func:`init` starts gloo instead (accelerate's
    own ``--cpu`` launcher needs MPI for more than one process). Precision stays ours (``--mixed_precision no``: the
    trainers autocast themselves). For several machines, run the same command on each with its ``machine_rank``
    and the main machine's ``main_address``/``main_port``; ``config_file`` is an ``accelerate config`` file."""
    import sys

    if processes < 1 or machines < 1:
        raise ValueError(f"train.processes and train.machines must be >= 1, got {processes} and {machines}")
    total = processes * machines
    cmd = [python or sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        cmd += ["--config_file", config_file]
    cmd += ["--num_processes", str(total), "--num_machines", str(machines), "--machine_rank", str(machine_rank),
            "--dynamo_backend", "no", "--mixed_precision", "no"]
    if total > 1:
        cmd += ["--multi_gpu"]
    if main_address:
        cmd += ["--main_process_ip", main_address]
    if main_port:
        cmd += ["--main_process_port", str(main_port)]
    return cmd + ["-m", *argv]
