"""ops/offline.env is the one source of the offline variables: the Makefile, the tests and the processes we start."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops import environment
from ops.environment import find_tool, offline_env, read_env_file, tool_env

ROOT = Path(__file__).resolve().parents[1]


def test_the_env_file_holds_the_offline_variables():
    env = offline_env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_this_test_session_runs_with_them():
    for name, value in offline_env().items():
        assert os.environ[name] == value, name


def test_the_makefile_exports_exactly_the_file(tmp_path):
    probe = tmp_path / "probe.mk"
    probe.write_text(f"include {ROOT / 'Makefile'}\nprobe:\n\t@env\n")
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path))}
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "-f", str(probe), "probe"], env=clean, capture_output=True,
                         text=True, check=True).stdout
    exported = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    for name, value in offline_env().items():
        assert exported.get(name) == value, name


@pytest.mark.parametrize("text, line", [("# comment\n\nA=1\nB = 2\n", 4), ("A\n", 1), ("A=1\nB= 2\n", 2)])
def test_bad_lines_are_refused_with_their_line_number(tmp_path, text, line):
    (tmp_path / "x.env").write_text(text)
    with pytest.raises(ValueError, match=rf"x\.env:{line}: expected NAME=value"):
        read_env_file(tmp_path / "x.env")


def test_comments_and_blank_lines_are_skipped_and_values_may_hold_spaces(tmp_path):
    (tmp_path / "x.env").write_text("# c\n\nA=1\nB=two words\n")
    assert read_env_file(tmp_path / "x.env") == {"A": "1", "B": "two words"}


def test_processes_we_start_get_the_venv_first_and_the_offline_variables(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    env = tool_env({"EXTRA": "x"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["HF_HUB_OFFLINE"] == "1" and env["EXTRA"] == "x"


def test_tools_are_found_beside_the_interpreter_first(monkeypatch, tmp_path):
    assert find_tool("dvc") == str(Path(sys.executable).with_name("dvc"))
    monkeypatch.setattr(environment.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no-such-tool"):
        find_tool("no-such-tool")
