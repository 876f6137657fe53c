"""``data:`` section of params.yaml: which sources feed training and evaluation, and how negatives are mined.

Default: the built-in code-search set only (trains and evaluates with no download). More sources::

    data:
      seed: 0
      sources:
        - {type: codesearch, weight: 1.0, eval_splits: [dev, test]}
        # - {type: beir, path: ../shared/data/scifact, weight: 1.0, train_split: train, eval_splits: [test]}
        # - {type: nq_open, path: ../shared/data/nq_open/nq-open-oracle.jsonl.gz, weight: 0.5,
        #    train_split: train, eval_splits: [test], options: {test_fraction: 0.2}}
        # - {type: hf, name: mteb/scifact, train_split: train, eval_splits: [test]}
      mining: {method: bm25, depth: 30, negatives: 7, false_negative_ratio: 0.95}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from searchr3.config import ConfigError, from_dict

SOURCE_TYPES = ("codesearch", "beir", "nq_open", "hf")


@dataclass
class SourceConfig:
    type: str = "codesearch"  # codesearch | beir (BEIR folder) | nq_open (oracle .jsonl.gz) | hf (datasets)
    path: str | None = None  # beir/nq_open: file or folder; hf: a local folder (or use `name`)
    name: str | None = None  # hf: hub id such as mteb/scifact (a local folder goes in `path`)
    label: str | None = None  # name used in outputs (eval/<label>-<split>, `source` column); default derived
    weight: float = 1.0  # relative share of this source in the mixed training set
    train_split: str | None = "train"  # split mined into training rows; null: evaluation only
    eval_splits: list[str] = field(default_factory=lambda: ["test"])  # splits written as evaluation sets
    max_train: int | None = None  # cap on training queries taken from this source (seeded subset)
    # N > 0: the "dev" evaluation split is carved out of the train split (N seeded judged queries over the train
    # corpus), for a source without a dev split of its own (SciFact); those queries never train
    dev_from_train: int = 0
    options: dict = field(default_factory=dict)  # extra keyword arguments of the loader (e.g. codesearch test_docs)

    def display_label(self) -> str:
        if self.label:
            return self.label
        if self.type == "codesearch":
            return "codesearch"
        if self.type == "nq_open":
            return "nq_open"
        ref = self.name or self.path or self.type
        return Path(str(ref).rstrip("/")).name

    def validate(self, where: str) -> None:
        if self.type not in SOURCE_TYPES:
            raise ConfigError(f"[{where}]: type {self.type!r} is not one of {list(SOURCE_TYPES)}")
        if self.type in ("beir", "nq_open") and not self.path:
            raise ConfigError(f"[{where}]: type {self.type} needs `path`")
        if self.type == "hf" and not (self.name or self.path):
            raise ConfigError(f"[{where}]: type hf needs `name` (hub id) or `path` (local folder)")
        if not self.weight > 0:
            raise ConfigError(f"[{where}]: weight must be > 0, got {self.weight}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.display_label()):
            raise ConfigError(f"[{where}]: label {self.display_label()!r} may hold only letters, "
                              "digits, '_', '.' and '-' (set `label`)")
        for split in [self.train_split or "", *self.eval_splits]:
            if "-" in split or "/" in split:  # eval folders are <label>-<split>: the last '-' separates them
                raise ConfigError(f"[{where}]: split name {split!r} may not contain '-' or '/'")
        if self.train_split is None and not self.eval_splits:
            raise ConfigError(f"[{where}]: neither train_split nor eval_splits: the source is unused")
        if self.dev_from_train < 0:
            raise ConfigError(f"[{where}]: dev_from_train must be >= 0, got {self.dev_from_train}")
        if self.dev_from_train and (self.type == "codesearch" or not self.train_split or "dev" not in self.eval_splits):
            raise ConfigError(f"[{where}]: dev_from_train carves the 'dev' evaluation split out of the train split: "
                              "it needs train_split, 'dev' in eval_splits, and a source other than codesearch "
                              "(which has a dev split of its own)")


@dataclass
class MiningConfig:
    method: str = "bm25"  # bm25 | dense (dense needs `model`, an embedder folder)
    depth: int = 30  # k: candidates taken from the top of the ranking (known positives excluded)
    negatives: int | None = 7  # negatives kept per query, drawn from the filtered candidates; null: all
    false_negative_ratio: float | None = 0.95  # drop candidates scoring >= ratio * positive's score; null: off
    model: str | None = None  # dense mining: path of the embedder (save_pretrained folder)


def _default_sources() -> list[dict]:
    return [{"type": "codesearch", "weight": 1.0, "train_split": "train", "eval_splits": ["dev", "test"]}]


@dataclass
class DataConfig:
    seed: int = 0  # seeds codesearch splits, per-source caps, negative sampling and source mixing
    sources: list[dict] = field(default_factory=_default_sources)  # see SourceConfig for the keys
    train_size: int | None = None  # rows in the mixed training set; null: as many as the weights allow
    mining: MiningConfig = field(default_factory=MiningConfig)

    def __post_init__(self) -> None:
        if isinstance(self.mining, dict):
            self.mining = from_dict(MiningConfig, self.mining, where="data.mining")

    def source_configs(self) -> list[SourceConfig]:
        """The sources as checked dataclasses (unknown keys and duplicate labels are errors)."""
        configs = []
        for i, raw in enumerate(self.sources):
            where = f"data.sources[{i}]"
            if not isinstance(raw, dict):
                raise ConfigError(f"[{where}]: expected a mapping, got {raw!r}")
            src = from_dict(SourceConfig, raw, where=where)
            src.validate(where)
            configs.append(src)
        labels = [s.display_label() for s in configs]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ConfigError(f"[data.sources]: labels {duplicates} are used twice; set `label`")
        if not configs:
            raise ConfigError("[data.sources]: no source")
        if self.mining.method not in ("bm25", "dense"):
            raise ConfigError(f"[data.mining]: method must be bm25 or dense, not {self.mining.method!r}")
        if self.mining.method == "dense" and not self.mining.model:
            raise ConfigError("[data.mining]: method dense needs `model`")
        return configs
