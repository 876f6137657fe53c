"""One way to do each thing: the stage signature, the paths table, the CLI's commands, the precision parser,
the one BM25 builder, and how a dvc repro's outcome is read (machine-readable, not DVC's log text)."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml

from searchr3 import stages
from searchr3.paths import MODELS, PATHS, STAGE_SUMMARIES

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_the_same_signature():
    for name in stages.STAGES:
        params = inspect.signature(getattr(stages, name)).parameters
        assert list(params)[0] == "params" and params["params"].default is None, name
        assert params["progress"].default is True, name
        assert all(p.default is not inspect.Parameter.empty for p in params.values()), name


def test_every_stage_task_takes_params_and_progress():
    from tasks.stages import STAGE_TASKS

    for name, stage_task in STAGE_TASKS.items():
        assert list(inspect.signature(stage_task.fn).parameters) == ["params", "progress"], name


def test_the_paths_table_is_what_dvc_yaml_declares():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = set()
    for stage in pipeline.values():
        for kind in ("outs", "metrics", "plots"):
            declared |= {next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])}
    standard = {v for k, v in PATHS.items() if k not in ("metrics", "plots", "data", "record", "releases")}
    assert standard <= declared, standard - declared
    assert set(MODELS.values()) <= declared and "data" in declared
    for stage, summary in STAGE_SUMMARIES.items():
        assert stage in pipeline
        outs = {next(iter(o)) if isinstance(o, dict) else o for k in ("outs", "metrics")
                for o in pipeline[stage].get(k, [])}
        assert any(summary == o or summary.startswith(o + "/") for o in outs), (stage, summary)


def test_the_cli_registers_every_command():
    from searchr3.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == COMMANDS


def test_the_cli_fails_loudly_when_a_command_module_is_missing(monkeypatch):
    from searchr3 import cli

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "not_written"])
    with pytest.raises(ModuleNotFoundError, match="searchr3.commands.not_written"):
        cli.build_parser()


@pytest.mark.parametrize("value, bf16", [("fp32", False), ("bf16", True)])
def test_one_precision_parser(value, bf16):
    from searchr3.model.embedder import resolve_dtype
    from searchr3.train.common import use_bf16

    cpu = torch.device("cpu")
    assert use_bf16(value, cpu) is bf16
    assert use_bf16("auto", torch.device("cuda")) is True
    assert (resolve_dtype(value, cpu) == torch.bfloat16) is bf16
    for unknown in ("yes", "true", True, "fp16"):
        with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
            use_bf16(unknown, cpu)


def test_mining_and_the_baseline_share_the_bm25_config():
    """A bm25: setting reaches both: without stemming 'cats' no longer matches 'cat', in mining and in search."""
    from searchr3.data.bm25 import Bm25Config
    from searchr3.data.mining import mine_bm25
    from searchr3.data.types import RetrievalSet
    from searchr3.eval.bm25 import bm25_search

    rs = RetrievalSet("toy", {"d1": "a cat sat", "d2": "cats sat on mats", "d3": "dogs run"},
                      {"q": "cat"}, {"q": {"d1": 1}})
    for config, expected in ((Bm25Config(), {"d1", "d2"}), (Bm25Config(stemmer=None), {"d1"})):
        assert set(bm25_search(rs, config=config)["q"]) == expected
        mined = mine_bm25(rs, k=5, false_negative_ratio=None, config=config).rows[0]
        assert set(mined["negative_ids"]) == expected - {"d1"}


def test_repro_outcome_comes_from_status_and_the_stage_log(tmp_path):
    from tasks.dvc import _stages_that_ran, stage_outcome

    log = tmp_path / "stages.jsonl"
    assert _stages_that_ran(log) == []
    log.write_text(json.dumps({"stage": "sft", "dvc_stage": "sft"}) + "\n")
    assert stage_outcome("sft", stale=True, ran=_stages_that_ran(log)) == "ran"
    assert stage_outcome("rl", stale=True, ran=_stages_that_ran(log)) == "restored"
    assert stage_outcome("rl", stale=False, ran=[]) == "skipped"


def test_the_stage_command_records_that_it_ran(tmp_path, monkeypatch):
    from searchr3.commands.stage import STAGE_LOG_ENV, record_run

    record_run("data")  # not asked for: writes nothing anywhere
    log = tmp_path / "stages.jsonl"
    monkeypatch.setenv(STAGE_LOG_ENV, str(log))
    monkeypatch.setenv("DVC_STAGE", "data")
    record_run("data")
    assert json.loads(log.read_text())["stage"] == "data"
