"""benchmarks/prefect_overhead.py --quick against the session's Prefect server: every size measured, `ratio:` last."""
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "prefect_overhead.py"


def test_quick_run_prints_every_size_and_ends_with_the_ratio(prefect_server):
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url}
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [int(m) for m in re.findall(r"^N=\s*(\d+):", proc.stdout, re.MULTILINE)] == [0, 10, 20]
    flow_s, direct_ms = map(float, re.search(r"N=20 tasks ([0-9.]+) s vs 20 direct calls ([0-9.]+) ms",
                                             proc.stdout).groups())
    ratio = float(re.fullmatch(r"ratio: ([0-9.]+)", lines[-1]).group(1))
    assert abs(ratio - flow_s / (direct_ms / 1000)) <= 0.01 * ratio + 0.01  # printed values are rounded


def test_sizes_must_allow_a_fit():
    proc = subprocess.run([sys.executable, str(BENCH), "--sizes", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sizes needs two different values" in proc.stderr
