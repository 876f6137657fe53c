"""Run by tests/test_distributed.py under ``accelerate launch``: GRPO on the tiny model with the toy GRPO data of
tests/conftest.py; every rank writes ``rank<R>.json`` (digests of its trainable weights and of its live index, the
traces it sampled per step) so the test can check that ranks agree and that the work was split.

    python tests/scripts/distributed_grpo.py MODEL_DIR WORK_DIR CONFIG_JSON

``SEARCHR3_TEST_KILL_AFTER=N``: rank 0 SIGKILLs itself right after its N-th checkpoint is committed."""
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's toy GRPO data (not a test module)

from conftest import _grpo_config, _grpo_index_config, _toy_rl_data  # noqa: E402

from kill_hook import die_after_checkpoints  # noqa: E402  (beside this script)
from searchr3.model.config import ModelConfig  # noqa: E402
from searchr3.train import common, grpo  # noqa: E402


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def main(model_dir: str, work: str, config_json: str) -> None:
    work = Path(work)
    rank = int(os.environ.get("RANK", "0"))
    rows, corpus = _toy_rl_data(8, 16)
    seen: dict = {"traces": [], "index": None, "weights": None}
    real_rollout = grpo.rollout

    def counting_rollout(trainee, batch, config):
        seen["traces"].append(len(batch) * config.group_size)
        return real_rollout(trainee, batch, config)

    grpo.rollout = counting_rollout
    real_finish = grpo.finish

    def recording_finish(trainee, index, state, config, *args, **kwargs):
        weights = common.trainable_state(trainee.model)  # before rank 0's export merges the LoRA weights
        seen["weights"] = digest([weights[k].numpy() for k in sorted(weights)])
        summary = real_finish(trainee, index, state, config, *args, **kwargs)
        seen["index"] = {"ids": index.doc_ids, "versions": index.versions.tolist(),
                         "vectors": digest([index.vectors(index.doc_ids)])}
        return summary

    grpo.finish = recording_finish
    die_after_checkpoints(int(os.environ.get("SEARCHR3_TEST_KILL_AFTER", "0")))
    summary = grpo.train_grpo(_grpo_config(**json.loads(config_json)), ModelConfig(), _grpo_index_config(), model_dir,
                              rows, corpus, work / "out", work / "ckpt", index_out=work / "index",
                              live_dir=work / "live", progress=False)
    (work / f"rank{rank}.json").write_text(json.dumps(seen | {"summary": summary}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:4])
