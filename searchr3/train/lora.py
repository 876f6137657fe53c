"""LoRA: the adapter settings both trainers read (``sft.lora`` and ``rl.lora`` in params.yaml) and the wrapping."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoRAConfig:
    r: int = 16  # adapter rank
    alpha: int = 32  # scaling: updates are multiplied by alpha / r
    dropout: float = 0.0  # 0 keeps a killed-and-resumed run bit-identical to an uninterrupted one
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def wrap_lora(model, lora: LoRAConfig, embed_id: int):
    """LoRA adapters on ``lora.targets`` plus a trainable row for the embed token (so gradients reach it)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets,
                        trainable_token_indices=[embed_id], task_type="CAUSAL_LM")
    return get_peft_model(model, config)
