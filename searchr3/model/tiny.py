"""A tiny random Llama with its own byte-level BPE tokenizer: no download, builds in about a second.

Used by the tests and the ``tiny`` profile so whole pipelines run in seconds. Deterministic given the seed.
``searchr3.model.materialize`` turns it into a model folder (source ``tiny-random``, or ``build_tiny_model``).
"""
from __future__ import annotations

from pathlib import Path

import torch

_TRAINING_TEXT = [
    "def add(a, b): return a + b", "Return the sum of two numbers.", "The quick brown fox jumps over the lazy dog.",
    "Search engines rank documents by relevance to a query.", "The embedding is the hidden state at the token.",
    "Analyse the search query: core concepts, synonyms and answer terms.", "Please represent the passage for retrieval.",
    "Please represent the user query for retrieval.", "import os\nimport sys\nclass Parser:\n    pass",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_raw(out: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int = 400) -> Path:
    """Save a random tiny Llama + tokenizer (without the embed token) to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
