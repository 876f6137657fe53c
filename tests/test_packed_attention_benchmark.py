"""benchmarks/packed_attention.py as a smoke run (2 layers of the real architecture, short rows): both attention
forms run on the same packed rows, their hidden states agree, and it ends with the ratio line."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "packed_attention.py"


def test_the_benchmark_compares_both_forms_on_the_same_rows_and_ends_with_the_ratio(capsys):
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("packed_attention_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--layers", "2", "--budget", "600", "--passes", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["encode"], ["train"])}
    assert rows["encode"][1] == "2" and rows["encode"][-2:] == ["per", "segment"]  # 256 + 248 tokens; a CPU: per segment
    assert rows["train"][1] == "2" and rows["train"][-2:] == ["per", "segment"]
    assert float(rows["encode"][-3]) < 1e-4 and float(rows["train"][-3]) < 1e-4     # the same hidden states
    assert re.search(r"^ratio: \d+\.\d\d$", out, re.M)
