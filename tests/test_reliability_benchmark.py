"""benchmarks/reliability.py: how a try's answer is classified, and one short real run."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "reliability.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("reliability_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ERR = "loading source x\nsearchr3: error: corpus.jsonl:3: control_character: 'text' holds U+0000 (hint: fix it)\n"


@pytest.mark.parametrize("expect, rc, stderr, same, bucket, kind", [
    ("reject", 3, ERR, None, "rejected", "refused"),
    ("reject", 3, ERR.replace("control_character", "empty_field"), None, "rejected", "refused_other_rule"),
    ("reject", 3, "searchr3: error: one\nsearchr3: error: two\n", None, "rejected", "refused_unclear"),
    ("reject", 1, "searchr3: error: unexpected KeyError: 'x'\n", None, "tracebacks", "unexpected"),
    ("reject", 1, "Traceback (most recent call last):\n  File ...\nKeyError: 'x'\n", None, "tracebacks", "traceback"),
    ("reject", None, "", None, "tracebacks", "hang"),
    ("reject", 0, "", None, "accepted", "ignored"),
    ("reject", 0, "", True, "accepted", "ignored"),
    ("reject", 0, "", False, "silent_wrong", "changed"),
    ("harmless", 0, "", True, "accepted", "harmless"),
    ("harmless", 0, "", False, "silent_wrong", "harmless_changed_output"),
    ("harmless", 3, ERR, None, "rejected", "refused_harmless"),
    ("warn", 0, "searchr3: warning: t.queries: shared_query (1 rows)\n", None, "rejected", "flagged"),
    ("warn", 0, "", None, "accepted", "ignored"),
])
def test_classify(expect, rc, stderr, same, bucket, kind):
    bench = load_benchmark()
    rule = "shared_query" if expect == "warn" else "control_character"
    outcome = bench.classify(expect, rule, rc, stderr, 1.0, output_same=same)
    assert (outcome.bucket, outcome.kind) == (bucket, kind)


def test_every_category_builds_its_tries_from_the_bases(tmp_path):
    bench = load_benchmark()
    bases = {name: bench.Base(name, tmp_path / name, {"type": "beir", "path": "{input}"}, name)
             for name in ("beir", "code", "hf", "hf_repo", "nq", "codesearch")}
    bases["codesearch"].validate = False
    tries = [t for make in bench.CATEGORIES.values() for t in make(bases, tmp_path)]  # cheap: nothing built yet
    assert list(tmp_path.iterdir()) == []
    distinct = {(t.category, t.base, t.case) for t in tries if t.category == "bad_input"}
    assert len(distinct) >= 60
    inputs = [t for t in tries if t.category in ("bad_input", "config")]
    assert {t.base for t in inputs} == {"beir", "code", "hf", "hf_repo", "nq", "codesearch", "params"}
    assert {t.command for t in tries if t.base == "codesearch"} == {"build"}
    assert all(t.expect in ("reject", "warn", "harmless", "harmless_changed") for t in inputs)
    by_category = {c: [t for t in tries if t.category == c] for c in ("damaged_artifact", "kill9", "concurrent")}
    assert len({t.case for t in by_category["damaged_artifact"]}) >= 24
    assert len(by_category["kill9"]) >= 30 and {t.base for t in by_category["kill9"]} == {"data", "sft", "rl", "index"}
    assert {t.base for t in by_category["concurrent"]} == {"data", "sft", "rl", "index"}


@pytest.mark.slow
def test_quick_run_of_a_few_tries(capsys, scifact_dir, nq_open_file):
    bench = load_benchmark()  # its bases are cut from ../shared/data (SciFact, NQ-open): skipped without them
    assert bench.main(["--quick", "--only", "/beir/NUL character in text"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "reliability: tried 2 rejected 2 tracebacks 0 accepted 0 silent_wrong 0"
