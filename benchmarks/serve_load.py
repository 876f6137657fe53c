"""Load test of `searchr3 serve` on 127.0.0.1: requests/s and p50/p99 latency at several concurrencies for the
dense and hybrid modes, then a promotion in the middle of the load (0 failed requests, the release id changes).

Bounded: every phase sends a fixed number of requests and the script stops by itself (a request that takes
longer than --timeout-s counts as an error). The service is the real command (`searchr3 serve`, uvicorn)
in a temporary workspace holding a promoted release, made by the real promotion code (`searchr3.promote`):

    python benchmarks/serve_load.py                                   # tiny random model (seconds)
    searchr3 model materialize --out /tmp/smollm2-base                # the real default base model (untrained)
    python benchmarks/serve_load.py --model /tmp/smollm2-base         # the real size: SmolLM2-135M

The corpus is the code-search test set built from this Python's standard library (1,000 functions; the
queries are its 200 docstring summaries, cycled). The client threads run on the same machine as the server,
so on a small machine they take CPU from it: run under `flock /work/cpu.lock` and say how many cores.
The promotion phase promotes a second release (--model-b; default: another tiny model, or a copy of --model)
whose index was built before the phase began, as the nightly builds it before its promotion gate.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchr3 import stages  # noqa: E402
from searchr3.data.beir import save_beir  # noqa: E402
from searchr3.data.codesearch import build_codesearch  # noqa: E402
from searchr3.promote import Decision, PromoteConfig, promote  # noqa: E402

SET = "codesearch-test"


def stage_model(workspace: Path, model: Path) -> None:
    """Make ``model`` the workspace's models/rl and build indexes/production over the corpus with it."""
    target = workspace / "models" / "rl"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model, target)
    params = {"model": {"precision": "fp32"}}
    stages.index(params, model="models/rl", corpus_dir=f"data/eval/{SET}", out="indexes/production")


def promote_staged(workspace: Path, hour: int) -> dict:
    """Promote what models/rl + indexes/production hold now (the gate is skipped: this measures serving)."""
    decision = Decision(True, "benchmark release", None, None, "rl", SET)
    return promote(decision, {}, PromoteConfig(keep_releases=3), run_id=f"bench{hour:03d}", cwd=workspace,
                   now=dt.datetime(2026, 1, 1, hour, tzinfo=dt.timezone.utc))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_phase(url: str, queries: list[str], mode: str, concurrency: int, requests: int, timeout_s: float,
              during=None) -> dict:
    """Send ``requests`` GET /search with ``concurrency`` client threads; ``during(done_count)`` is called once
    when a quarter of them are done (the promotion phase hooks in there)."""
    latencies: list[float] = []
    errors: list[str] = []
    releases: list[tuple[float, str]] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    hooked = threading.Event()

    def worker():
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                m = mode if mode != "mixed" else ("dense", "hybrid")[i % 2]
                started = time.perf_counter()
                try:
                    r = client.get("/search", params={"q": queries[i % len(queries)], "mode": m, "k": 10})
                    ok = r.status_code == 200
                    body = r.json() if ok else None
                except httpx.HTTPError as err:
                    ok, body = False, None
                    r = err
                took = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(took)
                        releases.append((time.perf_counter(), body["release"]))
                    else:
                        errors.append(f"{getattr(r, 'status_code', '')} {getattr(r, 'text', repr(r))[:200]}")
                    done = len(latencies) + len(errors)
                if during is not None and done >= requests // 4 and not hooked.is_set():
                    hooked.set()
                    threading.Thread(target=during, daemon=True).start()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    releases.sort()
    return {"mode": mode, "concurrency": concurrency, "requests": requests, "ok": len(latencies),
            "errors": len(errors), "error_examples": errors[:3], "wall_s": round(wall, 2),
            "rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "releases_in_order": list(dict.fromkeys(r for _, r in releases))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a tiny random model)")
    parser.add_argument("--model-b", type=Path, default=None, help="model promoted mid-load (default: see above)")
    parser.add_argument("--requests", type=int, default=200, help="requests per phase (default 200)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["dense", "hybrid"], choices=["dense", "hybrid", "bm25"])
    parser.add_argument("--swap-requests", type=int, default=400, help="requests of the promotion phase (default 400)")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default: reports/serve_load/tiny.json, or <model folder name>.json)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "reports" / "serve_load" / (f"{args.model.name}.json" if args.model else "tiny.json")
    args.out = args.out.resolve()  # the script works inside a temporary workspace
    args.model = args.model.resolve() if args.model else None
    args.model_b = args.model_b.resolve() if args.model_b else None

    workspace = Path(tempfile.mkdtemp(prefix="serve-load-"))
    proc = None
    try:
        from searchr3.model.materialize import build_tiny_model

        model = args.model or build_tiny_model(workspace / "tiny-a", seed=0)
        model_b = args.model_b or (build_tiny_model(workspace / "tiny-b", seed=1) if args.model is None else model)
        cs = build_codesearch(seed=0)["test"]
        save_beir(cs, workspace / "data" / "eval" / SET, "test")
        queries = list(cs.queries.values())
        shutil.copy(ROOT / "params.yaml", workspace / "params.yaml")
        os.chdir(workspace)
        t = time.perf_counter()
        stage_model(workspace, model)
        index_s = time.perf_counter() - t
        first = promote_staged(workspace, 1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(workspace / "serve.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "searchr3.cli", "serve", "--port", str(port)],
                                cwd=workspace, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"searchr3 serve exited:\n{(workspace / 'serve.log').read_text()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("searchr3 serve did not come up within 300 s")
        info = httpx.get(url + "/release").json()
        print(f"# serve_load: {info['documents']} documents, model {model} ({'tiny random' if args.model is None else 'given'}),"
              f" {os.cpu_count()} CPU cores shared by server and clients, {args.requests} requests per phase")
        # warm-up (first-request costs: thread pool, tokenizer caches)
        run_phase(url, queries, "mixed", 2, 20, args.timeout_s)
        results = []
        for mode in args.modes:
            for c in args.concurrency:
                health_before = httpx.get(url + "/health").json()["batcher"]
                row = run_phase(url, queries, mode, c, args.requests, args.timeout_s)
                health_after = httpx.get(url + "/health").json()["batcher"]
                batches = health_after["batches"] - health_before["batches"]
                row["mean_batch"] = round((health_after["queries"] - health_before["queries"]) / batches, 2) if batches else None
                results.append(row)
                print(f"{mode:>6}  c={c:<3} {row['rps']:>7.1f} req/s  p50 {row['p50_ms']:>8.1f} ms  "
                      f"p99 {row['p99_ms']:>8.1f} ms  errors {row['errors']}  mean batch {row['mean_batch']}", flush=True)

        # promotion under load: stage the second model first (index built), promote a quarter of the way in
        if Path(model_b) != Path(model):
            stage_model(workspace, model_b)  # (the same model: its staged model and index are promoted again)
        promoted = {}
        swap = run_phase(url, queries, "mixed", 4, args.swap_requests, args.timeout_s,
                         during=lambda: promoted.update(promote_staged(workspace, 2)))
        deadline = time.time() + 120
        while httpx.get(url + "/health").json()["release"] != promoted.get("release") and time.time() < deadline:
            time.sleep(0.5)
        health = httpx.get(url + "/health").json()
        swap.update({"from": first["release"], "to": promoted.get("release"), "served_after": health["release"],
                     "swaps": health["swaps"], "refused_releases": health["refused_releases"]})
        changed = swap["releases_in_order"][:1] == [first["release"]] and promoted.get("release") in swap["releases_in_order"]
        print(f"promotion under load: {swap['requests']} requests (dense/hybrid alternating, c=4), "
              f"{swap['errors']} failed, {swap['rps']} req/s, p50 {swap['p50_ms']} ms, p99 {swap['p99_ms']} ms; "
              f"release in responses {' -> '.join(swap['releases_in_order'])} "
              f"({'changed' if changed else 'DID NOT CHANGE'}); swap load+verify {health['swaps'][-1]['load_s'] if health['swaps'] else '-'} s")
        out = {"documents": info["documents"], "model": str(model), "model_b": str(model_b),
               "model_kind": "tiny random" if args.model is None else "given", "cpu_cores": os.cpu_count(),
               "index_build_s": round(index_s, 1), "phases": results, "promotion_under_load": swap,
               "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT)), *(argv or sys.argv[1:])])}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
        failed = sum(r["errors"] for r in results) + swap["errors"]
        return 0 if failed == 0 and changed else 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        os.chdir(ROOT)
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
