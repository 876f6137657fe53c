"""``--set SECTION.KEY=VALUE``: one parameter overridden after the profile, on every command that reads params."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from searchr3.cli import build_parser
from searchr3.commands.evaluate import reproduce_command
from searchr3.config import ConfigError, load_params, parse_override, section
from searchr3.train.sft_config import SFTConfig
from tests.test_cli_errors import beir_params, one_error_line, run_main, write_beir

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_values_are_read_as_json_else_text():
    assert parse_override("sft.lr=1e-4") == ("sft.lr", 1e-4)  # YAML would read 1e-4 as text
    assert parse_override("sft.doc_grad=true") == ("sft.doc_grad", True)
    assert parse_override("sft.lora.targets=[\"q_proj\"]") == ("sft.lora.targets", ["q_proj"])
    assert parse_override("sft.mode=full") == ("sft.mode", "full")
    assert parse_override("model.templates.query=a=b {text}") == ("model.templates.query", "a=b {text}")


@pytest.mark.parametrize("item", ["sft", "lr=1", "sft.=1", ".lr=1", "=1"])
def test_a_malformed_item_is_refused(item):
    with pytest.raises(argparse.ArgumentTypeError, match="expected SECTION.KEY=VALUE"):
        parse_override(item)


def test_overrides_apply_after_the_profile():
    overrides = dict(map(parse_override, ["sft.temperature=0.03", "sft.lora.r=4", "sft.steps=7"]))
    sft = section(load_params(PARAMS, "tiny", overrides), "sft", SFTConfig)
    assert (sft.temperature, sft.lora.r, sft.steps) == (0.03, 4, 7)
    assert section(load_params(PARAMS, "tiny"), "sft", SFTConfig).steps == 2  # the profile's value without it


def test_an_unknown_section_is_refused_naming_it():
    with pytest.raises(ConfigError, match="override sfft.lr=1: no section `sfft:`"):
        load_params(PARAMS, overrides={"sfft.lr": 1})


def test_the_command_line_reaches_the_section(tmp_path, capsys):
    """The file's value is valid; the --set value is not, and the error names it: the override was applied."""
    params = beir_params(tmp_path / "params.yaml", write_beir(tmp_path / "toy", '{"_id": "d1", "text": "A."}\n'))
    code, _, err = run_main(capsys, "--params", str(params), "--set", "data.mining.negatives=\"two\"",
                            "data", "build", "--out", str(tmp_path / "data"))
    line = one_error_line(err)
    assert code == 2 and "[data.mining.negatives]: expected int | None, got 'two'" in line
    assert "(with --set data.mining.negatives='two')" in line
    assert not (tmp_path / "data").exists()


def test_a_malformed_set_is_a_one_line_usage_error(capsys):
    code, _, err = run_main(capsys, "--set", "temperature=0.05", "data", "build")
    assert code == 2 and "expected SECTION.KEY=VALUE" in one_error_line(err)


def test_refused_in_a_stage_that_dvc_runs(tmp_path, capsys, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"sft": {"steps": 2}}))
    monkeypatch.setenv("DVC_STAGE", "sft")
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    code, _, err = run_main(capsys, "--params", str(params), "--set", "sft.steps=3", "stage", "sft")
    line = one_error_line(err)
    assert code == 2 and "--set sft.steps in a stage that dvc runs" in line and "dvc exp run -S" in line


def test_the_printed_evaluate_command_carries_the_overrides():
    args = build_parser().parse_args(["--set", "model.max_doc_tokens=512", "--set", "model.precision=fp32",
                                      "evaluate", "--model", "bm25", "--dataset", "d", "--split", "test"])
    assert args.overrides == {"model.max_doc_tokens": 512, "model.precision": "fp32"}
    assert "--set model.max_doc_tokens=512 --set model.precision=fp32 evaluate" in reproduce_command(args)
