"""Every CLI error is one line on stderr with its documented exit code; a traceback only with --debug."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchr3.cli import build_parser, main
from searchr3.commands.evaluate import reproduce_command
from searchr3.config import ConfigError, load_params, parse_override, section
from searchr3.train.sft_config import SFTConfig


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        sys.exit(main(list(argv)))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def one_error_line(err: str) -> str:
    """The error: exactly one ``searchr3: error:`` line, the last one (progress logging may precede it)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("searchr3: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and "Traceback" not in err, err
    return errors[0]


def write_beir(folder: Path, corpus: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "red fruit"}\n{"_id": "t1", "text": "sweet"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td2\t1\n")
    return folder


def beir_params(path: Path, folder: Path, **extra) -> Path:
    path.write_text(json.dumps({"data": {"sources": [{"type": "beir", "path": str(folder), "train_split": "train",
                                                      "eval_splits": ["test"], **extra}],
                                         "mining": {"depth": 3, "negatives": 1}}}))
    return path


def test_usage_error_is_one_line_exit_2(capsys):
    code, _, err = run_main(capsys, "evaluate", "--model", "bm25")
    assert code == 2
    line = one_error_line(err)
    assert "--dataset" in line and "see `searchr3 evaluate --help`" in line


CONFIG_CASES = {
    "unknown source type": ({"type": "beer"}, "[data.sources[0]]: type 'beer' is not one of"),
    "unknown key": ({"spilt": "test"}, "[data.sources[0]]: unknown key(s) ['spilt']"),
    "number YAML reads as text": ({"weight": "1e-1"}, "[data.sources[0].weight]: expected float, got '1e-1'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_errors_name_the_file_given(tmp_path, capsys, case):
    extra, phrase = CONFIG_CASES[case]
    params = beir_params(tmp_path / "my-params.yaml", tmp_path / "toy", **extra)
    code, _, err = run_main(capsys, "--params", str(params), "data", "build", "--out", str(tmp_path / "data"))
    line = one_error_line(err)
    assert code == 2 and f"{params} {phrase}" in line, line


def test_missing_params_file(tmp_path, capsys):
    code, _, err = run_main(capsys, "--params", str(tmp_path / "nope.yaml"), "validate", "--data", "data")
    assert code == 2 and f"{tmp_path / 'nope.yaml'}: parameters file not found" in one_error_line(err)


def test_broken_yaml_names_file_line_and_column(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  seed: 0\n  sources: [ {type: beir\n")
    code, _, err = run_main(capsys, "--params", str(params), "data", "build")
    line = one_error_line(err)
    assert code == 2 and f"{params}:4:1: broken YAML" in line, line


def test_unknown_profile_says_where_it_came_from(tmp_path, capsys, monkeypatch):
    params = tmp_path / "p.yaml"
    params.write_text("profiles:\n  tiny: {}\n")
    code, _, err = run_main(capsys, "--params", str(params), "--profile", "huge", "data", "build")
    assert code == 2 and "unknown profile 'huge' (from --profile); known: ['default', 'tiny']" in one_error_line(err)
    monkeypatch.setenv("SEARCHR3_PROFILE", "nightly")
    code, _, err = run_main(capsys, "--params", str(params), "data", "build")
    assert code == 2 and "unknown profile 'nightly' (from the SEARCHR3_PROFILE environment variable)" in \
        one_error_line(err)


def test_section_errors_name_file_and_profile(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("sft: {lr: 1.0e-4}\nprofiles:\n  fast: {sft: {lr: 1e-3}}\n")
    with pytest.raises(ConfigError) as info:
        section(load_params(params, "fast"), "sft", SFTConfig)
    assert str(info.value) == (f"{params} [sft.lr]: expected float, got '1e-3' (str) (YAML reads a number such as "
                               "1e-4 as text; write it with a dot: 1.0e-4) (profile fast)")


def test_bad_data_is_exit_3_naming_file_line_rule(tmp_path, capsys):
    folder = write_beir(tmp_path / "toy", '{"_id": "d1", "text": "Apples."}\n{"_id": "d2", "title": 5, "text": "x"}\n')
    params = beir_params(tmp_path / "params.yaml", folder)
    code, _, err = run_main(capsys, "--params", str(params), "data", "build", "--out", str(tmp_path / "data"))
    line = one_error_line(err)
    assert code == 3 and f"{folder / 'corpus.jsonl'}:2: field_type: 'title' must be a string, got int" in line
    assert "hint: fix or remove" in line
    code, out, err = run_main(capsys, "--params", str(params), "validate", "--dataset", str(folder),
                              "--report-dir", str(tmp_path / "reports"))
    assert code == 3 and "toy-test.corpus field_type (1 rows, first at line 2)" in one_error_line(err)
    assert "toy-test.corpus: rule field_type" in out  # the full report goes to stdout


def test_damaged_artifact_is_exit_4(tmp_path, capsys):
    (tmp_path / "data" / "eval").mkdir(parents=True)
    code, _, err = run_main(capsys, "validate", "--data", str(tmp_path / "data"), "--report-dir", str(tmp_path / "r"))
    line = one_error_line(err)
    assert code == 4 and f"{tmp_path / 'data' / 'train'}: missing_file: no train dataset" in line
    assert "hint: rebuild it" in line


def test_unexpected_error_is_exit_1_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import searchr3.data.build

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(searchr3.data.build, "build_data", boom)
    params = beir_params(tmp_path / "params.yaml", tmp_path / "toy")
    code, _, err = run_main(capsys, "--params", str(params), "data", "build")
    assert code == 1 and "unexpected RuntimeError: disk on fire" in one_error_line(err)
    assert "--debug" in err
    code, _, err = run_main(capsys, "--params", str(params), "--debug", "data", "build")
    assert code == 1 and "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith(
        "searchr3: error: unexpected RuntimeError")


def test_interrupt_is_exit_130(tmp_path, capsys, monkeypatch):
    import searchr3.data.build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(searchr3.data.build, "build_data", interrupted)
    code, _, err = run_main(capsys, "--params", str(beir_params(tmp_path / "p.yaml", tmp_path / "toy")), "data",
                            "build")
    assert code == 130 and "interrupted" in one_error_line(err)


def test_console_script_prints_no_traceback(tmp_path):
    """The real process: a config error (exit 2) and a data error (exit 3), one line each, nothing else."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    folder = write_beir(tmp_path / "toy", '{"_id": "d1", "text": "Apples\\u0000"}\n')
    beir_params(tmp_path / "params.yaml", folder)
    for argv, code, phrase in [
        (["--params", "missing.yaml", "data", "build"], 2, "missing.yaml: parameters file not found"),
        (["data", "build", "--out", "out"], 3, "corpus.jsonl:1: control_character: 'text' holds U+0000"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "searchr3.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, proc.stderr
        assert phrase in one_error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


# `--set SECTION.KEY=VALUE`: one parameter overridden after the profile, on every command that reads params

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


def test_both_command_lines_collect_overrides_alike(monkeypatch):
    """``searchr3 --set`` and ``python -m flows.pipeline --set``: one dict, a key given twice keeps the last value."""
    import flows.pipeline as pipeline
    from searchr3.cli import build_parser

    argv = ["--set", "sft.lr=1e-4", "--set", "sft.steps=3", "--set", "sft.lr=2e-4"]
    expected = {"sft.lr": 2e-4, "sft.steps": 3}
    assert build_parser().parse_args(argv + ["stage", "sft"]).overrides == expected
    seen = {}

    class Done:
        def is_completed(self):
            return True

    monkeypatch.setattr(pipeline, "training_pipeline", lambda params, profile, overrides, *a, **kw:
                        seen.setdefault("overrides", overrides) and Done())
    assert pipeline.main(argv) == 0 and seen["overrides"] == expected


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
