"""``validate:`` section of params.yaml: bounds the Great Expectations suites check."""
from __future__ import annotations

from dataclasses import dataclass

REPORT_DIR = "reports/validation"  # summary.json and data_docs/ (HTML), unless a caller names another folder


@dataclass
class ValidateConfig:
    min_text_chars: int = 1  # shortest document / query text accepted
    max_doc_chars: int = 20000  # longest document text accepted (SciFact's longest abstract: ~10k)
    max_query_chars: int = 2000  # longest query text accepted
    min_negatives: int = 1  # every training row needs at least this many mined negatives
    min_source_share: float = 0.05  # every training source holds at least this fraction of the rows
    max_source_share: float = 0.9  # ... and at most this fraction (checked when there are 2+ sources)
    examples: int = 5  # offending rows quoted per broken rule
