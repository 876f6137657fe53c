"""A run's profile in params.yaml (searchr3.config.profile_for_run): what dvc repro reads, then the file as it was."""
from __future__ import annotations

import pytest

from searchr3.config import (ConfigError, load_params, profile_for_run, profile_mismatch,
                             restore_interrupted_profile, written_profile)

PARAMS = """# the parameters
profile: default   # the active profile

sft: {steps: 48}
profiles:
  tiny: {sft: {steps: 2}}
  other: {sft: {steps: 3}}
"""


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    return path


def test_the_file_says_the_profile_during_the_run_then_exactly_what_it_said(params):
    with profile_for_run("tiny", params) as used:
        assert used == "tiny" and written_profile(params) == "tiny"
        assert load_params(params)["sft"]["steps"] == 2  # what `dvc repro` and each stage read now
        assert "# set for one run (was: default)" in params.read_text()
    assert params.read_text() == PARAMS


def test_a_failing_run_restores_the_file_too(params):
    with pytest.raises(RuntimeError), profile_for_run("tiny", params):
        raise RuntimeError("the sft stage failed")
    assert params.read_text() == PARAMS


def test_a_run_killed_before_its_end_is_undone_by_the_next(params):
    block = profile_for_run("tiny", params)
    block.__enter__()  # ... and the process is killed: no __exit__
    assert written_profile(params) == "tiny"
    with profile_for_run(None, params) as used:  # the next nightly, with params.yaml's own profile
        assert used == "default"
    assert written_profile(params) == "default"
    assert restore_interrupted_profile(params) is None  # nothing left to undo


def test_no_profile_or_the_written_one_leaves_the_file_alone(params):
    for profile in (None, "default"):
        with profile_for_run(profile, params) as used:
            assert used == "default" and params.read_text() == PARAMS


def test_an_unknown_profile_is_refused_before_anything_is_written(params):
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        with profile_for_run("huge", params):
            pass
    assert params.read_text() == PARAMS


def test_an_environment_profile_the_run_does_not_use_is_refused(params, monkeypatch):
    """SEARCHR3_PROFILE is invisible to dvc repro: it must agree with the run's profile (parameter, else the file)."""
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    assert profile_mismatch(params) is None and profile_mismatch(params, "tiny") is None
    monkeypatch.setenv("SEARCHR3_PROFILE", "tiny")
    assert profile_mismatch(params, "tiny") is None  # the flow parameter names it: params.yaml will say it
    why = profile_mismatch(params, "other")
    assert why.startswith("SEARCHR3_PROFILE=tiny but this run's profile parameter is other") and "--param" in why
    why = profile_mismatch(params)  # no parameter: params.yaml's own profile (default) is the run's
    assert "says profile: default" in why and "make run PROFILE=tiny" in why
