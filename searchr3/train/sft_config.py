"""``sft:`` section of params.yaml — every knob of stage 1, with its default and meaning."""
from __future__ import annotations

from dataclasses import dataclass, field

from searchr3.train.lora import LoRAConfig


@dataclass
class SFTConfig:
    mode: str = "lora"  # lora | full
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # mode lora: rank, alpha, dropout, target modules (sft.lora.r ...)
    steps: int = 96  # optimizer steps
    batch_size: int = 8  # queries per optimizer step (split into grad_accum micro-batches)
    grad_accum: int = 1
    lr: float = 8.0e-4
    token_lr_scale: float = 50.0  # mode lora: the embed token's row (input and tied output) trains at lr x this
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    negatives_per_query: int = 1  # mined hard negatives used per query (<= what the data stage mined)
    max_query_tokens: int = 64  # = model.max_query_tokens: the cut inference uses
    max_doc_tokens: int = 256  # = model.max_doc_tokens and evaluate.doc_caps[0]: trained at the cut it is scored at
    max_trace_tokens: int = 32
    doc_grad: bool = True  # back-propagate through the document side too; False: documents encoded without grad (half the time)
    temperature: float = 0.02  # InfoNCE τ (params.yaml)
    in_batch_negatives: bool = True
    margin: float = 0.1  # triplet θ
    lambda_nce: float = 1.0
    lambda_tri: float = 0.1
    lambda_ce: float = 0.5  # CE on every row's response through the token: how emission is learned
    lambda_kl: float = 0.05
    traces: str = "self"  # self | file | none — where the reasoning traces for CE/KL come from
    traces_file: str = ""  # JSONL {query_id, trace} (traces: file) from any stronger teacher
    trace_queries: int = 128  # self: how many training queries get sampled traces
    trace_samples: int = 2  # self: traces sampled per query (rejection sampling keeps the helpful ones)
    trace_temperature: float = 0.7
    trace_warmup_steps: int = 8  # direct-only steps before the candidate traces are scored by the model being trained
    #                              (in the exact training format); the kept ones then join the rows
    trace_repeats: int = 30  # each row with a kept trace appears this many times per epoch (oversampled); 1 = once
    bare_reasoning_share: float = 0.5  # of the rows without a kept trace, the share (a fixed subset of queries) that
    #                                    train in the reasoning format with an empty trace: the reasoning prompt + the
    #                                    closing suffix, what inference embeds when the model closes at once;
    #                                    InfoNCE and triplet only (no CE, no KL: they must not teach it to skip its analysis)
    precision: str = "auto"  # bf16 autocast: auto | bf16 | fp32
    gradient_checkpointing: bool = False
    eval_every: int = 48  # dev nDCG@10 every N steps (and at the end); best checkpoint is exported
    dev_set: str | None = None  # evaluation set (data/eval/<name>) the best checkpoint is chosen on; null: first *-dev
    dev_max_queries: int = 100
    dev_max_docs: int = 300  # dev corpus cap during training (positives + random distractors): a sample reads higher than
    # the whole corpus (SciFact, 5,183 abstracts: 0.75 over 300 vs 0.48 over all, 2026-11-27); it picks a checkpoint
    checkpoint_every: int = 10
    seed: int = 0
