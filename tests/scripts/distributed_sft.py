"""Run by tests/test_distributed.py under ``accelerate launch`` (or plainly, one process): SFT on the tiny model with
toy rows, then rank 0 writes what the test compares (losses per step) beside the exported model.

    python tests/scripts/distributed_sft.py MODEL_DIR WORK_DIR CONFIG_JSON

``SEARCHR3_TEST_KILL_AFTER=N``: rank 0 SIGKILLs itself right after its N-th checkpoint is committed, a real crash
at a known point (the launcher, torchrun underneath, then stops the other ranks and exits non-zero)."""
import json
import os
import random
import sys
from pathlib import Path

from searchr3.data.types import RetrievalSet
from kill_hook import die_after_checkpoints  # beside this script
from searchr3.model.config import ModelConfig
from searchr3.train.sft import train_sft
from searchr3.train.sft_config import SFTConfig

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def toy_rows(n):
    rows = []
    for i in range(n):
        words = random.Random(i).sample(WORDS, 3)
        rows.append({"query_id": f"q{i}", "query": " ".join(words), "positive": " ".join(words) + " document",
                     "positive_id": f"d{i}", "negatives": [" ".join(random.Random(100 + i).sample(WORDS, 3 + i % 3))],
                     "negative_ids": [f"n{i}"], "source": "toy"})
    return rows


def main(model_dir: str, work: str, config_json: str) -> None:
    work = Path(work)
    cfg = json.loads(config_json)
    rows = toy_rows(cfg.pop("rows", 16))
    traces = [{"query_id": f"q{i}", "trace": " ".join(WORDS[i:i + 2 + i % 4])} for i in range(cfg.pop("traced", 0))]
    dev = RetrievalSet("dev", {r["positive_id"]: r["positive"] for r in rows}, {r["query_id"]: r["query"] for r in rows},
                       {r["query_id"]: {r["positive_id"]: 1} for r in rows})
    die_after_checkpoints(int(os.environ.get("SEARCHR3_TEST_KILL_AFTER", "0")))
    summary = train_sft(SFTConfig(**cfg), ModelConfig(), model_dir, rows, dev, work / "out", work / "ckpt",
                        traces=traces, live_dir=work / "live", progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        (work / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:4])
