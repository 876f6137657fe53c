"""Prefect's cost per task and per flow run: flows of N no-op-ish tasks against the same N direct calls.

Fits wall = fixed + per_task * N over several N (each timed `--repeats` times, best kept), so the per-flow
cost (state changes, log and event flushes at the end of a run) is separated from the per-task cost.
Ends with ``ratio: X.XX``: a whole flow run of the largest N tasks over the same N direct calls.

    PREFECT_HOME=$(mktemp -d) .venv/bin/python benchmarks/prefect_overhead.py              # ephemeral server
    PREFECT_HOME=$(mktemp -d) .venv/bin/python benchmarks/prefect_overhead.py --quick      # under a minute
    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python benchmarks/prefect_overhead.py   # make prefect-up
"""
from __future__ import annotations

import argparse
import time


def work(i: int) -> int:
    return sum(range(1000)) + i


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="sizes 0 10 20, one repeat: under a minute")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [0, 10, 20], 1
    if len(set(args.sizes)) < 2 or max(args.sizes) < 1:
        parser.error("--sizes needs two different values, one of them > 0 (the fit and the ratio need them)")

    start = time.perf_counter()
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    import_s = time.perf_counter() - start

    wrapped = task(work, cache_policy=NO_CACHE, persist_result=False)

    inside: dict[int, float] = {}

    @flow
    def many(n: int) -> int:
        start = time.perf_counter()
        total = sum(wrapped(i) for i in range(n))
        inside[n] = min(inside.get(n, float("inf")), time.perf_counter() - start)  # the task calls themselves
        return total

    start = time.perf_counter()
    many(0)
    first_s = time.perf_counter() - start
    rows = []
    for n in args.sizes:
        direct = best_of(args.repeats, lambda: sum(work(i) for i in range(n)))
        in_flow = best_of(args.repeats, lambda: many(n))
        rows.append((n, direct, in_flow))
        print(f"N={n:4d}: direct {direct * 1000:8.2f} ms | whole flow run {in_flow * 1000:8.1f} ms | "
              f"the N task calls inside it {inside[n] * 1000:8.1f} ms")
    xs, ys = [r[0] for r in rows], [r[2] - r[1] for r in rows]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    calls = [(n, inside[n] - d) for n, d, _ in rows if n]
    per_call = sum(t for _, t in calls) / sum(n for n, _ in calls)
    print(f"import prefect {import_s:.2f} s; first flow run {first_s:.2f} s (starts an ephemeral server if no "
          f"PREFECT_API_URL); per flow run {(mean_y - slope * mean_x):.2f} s; per task {slope * 1000:.1f} ms "
          f"(fit over whole runs), {per_call * 1000:.1f} ms (the call itself)")
    n, direct, in_flow = max(rows)
    print(f"flow run of N={n} tasks {in_flow:.4f} s vs {n} direct calls {direct * 1000:.4f} ms")
    print(f"ratio: {in_flow / direct:.2f}")


if __name__ == "__main__":
    main()
