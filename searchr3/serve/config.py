"""``serve:`` section of params.yaml: how ``searchr3 serve`` listens, bounds requests and batches them."""
from __future__ import annotations

from dataclasses import dataclass

from searchr3.paths import PATHS


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # listen address; 0.0.0.0 exposes the service beyond this machine
    port: int = 8000
    record: str = PATHS["record"]  # the production record watched for promotions
    poll_s: float = 1.0  # how often the record is checked for a new release
    default_k: int = 10  # results when a request names no k
    max_k: int = 100  # largest k a request may ask for
    max_query_chars: int = 1000  # longer queries are refused (the model truncates to model.max_query_tokens)
    fusion_depth: int = 100  # hybrid: candidates each ranker contributes to the reciprocal-rank fusion
    max_batch: int = 16  # queries encoded together by the micro-batcher
    max_wait_ms: float = 2.0  # how long the batcher waits for more queries after the first
    queue_size: int = 256  # queued queries beyond which requests are refused with 503
    request_timeout_s: float = 60.0  # a request waiting longer than this for the model gets 503
    reasoning_budget_ms: int = 3000  # default time budget of reasoning generation per request
    max_reasoning_budget_ms: int = 30000  # largest budget a request may ask for
    snippet_chars: int = 300  # document text shown per result

    def __post_init__(self):
        for name in ("default_k", "max_k", "max_query_chars", "fusion_depth", "max_batch", "queue_size",
                     "reasoning_budget_ms", "max_reasoning_budget_ms", "snippet_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"serve.default_k must be between 1 and serve.max_k ({self.max_k}), got {self.default_k}")
        if self.poll_s <= 0 or self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            raise ValueError("serve.poll_s and serve.request_timeout_s must be > 0, serve.max_wait_ms >= 0")
        if self.reasoning_budget_ms > self.max_reasoning_budget_ms:
            raise ValueError("serve.reasoning_budget_ms must not exceed serve.max_reasoning_budget_ms")
