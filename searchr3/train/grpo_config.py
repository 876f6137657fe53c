"""``rl:`` section of params.yaml — every knob of stage 2 (GRPO against the live index), with its default and meaning.

The index itself (FAISS structure, refresh budget, fidelity probes) is configured in ``index:``
(``searchr3.index.config``). The defaults here fit the CPU budget: on 2 shared cores, SmolLM2-135M with
SciFact rows and index.refresh {budget_per_step: 32, probe_every: 6, probe_size: 32} took 16 minutes while
other jobs loaded the cores (load average about 3); its uncontended steps took 17-19 s and a fidelity probe
about 1 min, which puts an idle run near 8 minutes (estimate, not a measured whole run).
The GPU profile raises steps, queries, group size, lengths and ``micro_batch``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from searchr3.train.lora import LoRAConfig


@dataclass
class GRPOConfig:
    mode: str = "lora"  # lora | full
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # mode lora: rank, alpha, dropout, target modules (rl.lora.r ...)
    steps: int = 12  # optimizer steps = policy versions added; one index refresh after each
    queries_per_step: int = 4  # training queries per step (each gets a group of group_size traces)
    group_size: int = 4  # G: traces sampled per query; advantages are normalised within the group (>= 2)
    temperature: float = 0.8  # sampling temperature of the traces (> 0); log-probs, ratio and KL use the same temperature
    #                           (the trace length cap is model.max_new_tokens, the one evaluation uses)
    max_query_tokens: int = 64  # query text is truncated to this many tokens inside the prompt (= model.max_query_tokens)
    max_doc_tokens: int = 256  # document text truncated to this many tokens (index encoding and the InfoNCE term)
    lr: float = 3.0e-4  # LoRA default (CPU, 12 steps); use about 1e-5 for mode: full
    token_lr_scale: float = 10.0  # mode lora: the embed token's row (input and tied output) trains at lr x this
    warmup_steps: int = 2  # linear warm-up, then linear decay to 0.1 x lr at the last step
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2  # ε of the clipped surrogate: ratio kept in [1 - ε, 1 + ε]
    beta: float = 0.04  # weight of the k3 KL(policy ‖ reference) penalty on the generated tokens
    updates_per_step: int = 1  # optimizer updates on the same samples (> 1 makes the ratio and clipping matter)
    reward_cutoff: int = 10  # rank reward 1/log2(1 + rank) up to this rank, 0 beyond
    w_rank: float = 1.0  # weight of the rank reward
    w_format: float = 0.1  # reward for emitting <|embed_token|> without the fallback suffix
    lambda_nce: float = 0.1  # weight of InfoNCE on (direct query, positive, negatives) keeping documents aligned; 0 = off
    lambda_trace_nce: float = 1.0  # weight of InfoNCE on the sampled traces' embeddings (pooled with gradient) against
    #                                their positive and negatives in the live index; 0 = off
    nce_temperature: float = 0.05  # InfoNCE τ
    nce_doc_grad: bool = False  # back-propagate the InfoNCE term through the documents too (GPU); False: query side only
    negatives_per_query: int = 1  # mined hard negatives per query in the InfoNCE term (and refreshed as "used")
    max_corpus_docs: int = 300  # index at most this many docs: every doc the run's rows use + seeded distractors; 0 = all
    micro_batch: int = 16  # sequences per forward pass / backward chunk (generation, scoring and update)
    final_refresh: bool = True  # re-encode every stale vector with the final policy before saving the index snapshot
    precision: str = "auto"  # bf16 autocast: auto | bf16 | fp32
    gradient_checkpointing: bool = False
    checkpoint_every: int = 4  # atomic checkpoint (weights, optimizer, RNG, index) every N steps and at the end
    seed: int = 0
