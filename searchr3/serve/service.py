"""The search service: which release is served, how a promotion replaces it, and search itself.

Hot swap. A watcher thread checks the production record every ``serve.poll_s``. When it names another
release, that release is loaded *beside* the current one (``searchr3.serve.loaded.load_release``: verify,
load, smoke-test) and then made current with one reference assignment under a lock. A request reads the
current release once, when it starts, and uses only that object, so requests in flight finish on the
old release and the old one is freed when the last of them ends. A release that fails is refused: the
reason is logged and kept (``/health`` shows it) and the old release keeps serving; the same record is
not retried until it changes again.

Search. ``dense``: the query is embedded (micro-batched with concurrent requests, ``searchr3.serve.batcher``)
and FAISS ranks the index. ``bm25``: the release's BM25 index. ``hybrid``: reciprocal-rank fusion
(``searchr3.eval.fusion``) of the dense and BM25 top ``serve.fusion_depth``. ``reasoning``: the model first
generates an analysis within a time budget (``max_time`` of generation), one reasoning request at a time
(``serve.reasoning`` lock) beside the batcher; a trace cut by the budget gets the fallback suffix and says so.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from searchr3.eval.bm25 import bm25_rank
from searchr3.eval.fusion import rrf
from searchr3.release import ReleaseInvalid, ReleasePaths, release_paths, workspace_paths
from searchr3.serve.batcher import Busy, MicroBatcher, dense_rankings
from searchr3.serve.config import ServeConfig
from searchr3.serve.loaded import MODES, LoadedRelease, load_release

log = logging.getLogger("searchr3.serve")


class BadRequest(ValueError):
    """A request the service refuses (HTTP 400 or 422): the message says which parameter and why."""


class Unavailable(RuntimeError):
    """The service cannot answer now (HTTP 503): overloaded, or the model did not answer in time."""


@dataclass
class Query:
    q: str
    k: int
    mode: str
    reasoning: bool = False
    budget_ms: int | None = None


class SearchService:
    """Serve the release of ``config.record`` (watched) or, with ``paths``, one fixed release."""

    def __init__(self, config: ServeConfig | None = None, model_config=None, evaluate_config=None, bm25_config=None,
                 paths: ReleasePaths | None = None, root: str | Path = "."):
        """``model_config``, ``evaluate_config`` (``rrf_k``) and ``bm25_config``: those sections of params.yaml."""
        from searchr3.eval.config import EvaluateConfig

        self.config = config or ServeConfig()
        self.model_config = model_config
        self.rrf_k = (evaluate_config or EvaluateConfig()).rrf_k
        self.bm25_config = bm25_config
        self.root = Path(root)
        self.fixed = paths
        self.record_path = self.root / self.config.record
        self._current: LoadedRelease | None = None
        self._swap_lock = threading.Lock()
        self._reason_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._seen: tuple | None = None  # stat signature of the record last acted on
        self.batcher: MicroBatcher | None = None
        self.started_at = time.time()
        self.swaps: list[dict] = []
        self.refusals: list[dict] = []
        self.counts = {"requests": 0, "errors": 0, "refused_requests": 0}
        self._count_lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, watch: bool = True) -> "SearchService":
        """Load the release to serve (raising if it cannot be served), start the batcher and the watcher."""
        if self.fixed is not None:
            self._current = load_release(self.fixed, self.model_config, self.bm25_config)
        else:
            self._seen = self._signature()
            self._current = load_release(self._initial_paths(), self.model_config, self.bm25_config)
        log.info("serving release %s (%d documents, loaded in %.1f s)", self._current.id, len(self._current.index),
                 self._current.load_s)
        self.batcher = MicroBatcher(self.config.max_batch, self.config.max_wait_ms, self.config.queue_size)
        if watch and self.fixed is None:
            self._watcher = threading.Thread(target=self._watch, name="searchr3-watcher", daemon=True)
            self._watcher.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        if self.batcher is not None:
            self.batcher.close()

    @property
    def current(self) -> LoadedRelease:
        release = self._current
        if release is None:
            raise Unavailable("no release is loaded")
        return release

    # ---- hot swap -------------------------------------------------------------------------------
    def _initial_paths(self) -> ReleasePaths:
        """The record's release; before the first promotion, the pipeline's own model and index (as
        ``searchr3 search`` does), still watching the record so that the first promotion is picked up."""
        from searchr3.production import production_index, production_model

        record = self._read_record()
        if record is not None:
            return release_paths(record, self.root)
        model, index = self.root / production_model(self.record_path), self.root / production_index(self.record_path)
        if not (model.is_dir() and index.is_dir()):
            raise FileNotFoundError(f"{self.record_path}: no production record (nothing promoted yet) and no "
                                    f"{model} + {index} to fall back on; run the pipeline (make run) or pass "
                                    "--model and --index")
        log.warning("%s not found: serving the workspace's %s and %s until a release is promoted",
                    self.record_path, model, index)
        return workspace_paths(model, index, self.root)

    def _read_record(self) -> dict | None:
        try:
            return json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None

    def _signature(self) -> tuple | None:
        try:
            st = os.stat(self.record_path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_s):
            try:
                self.check_for_update()
            except Exception:  # noqa: BLE001 - the watcher must survive anything; the old release keeps serving
                log.exception("checking %s for a new release failed", self.record_path)

    def check_for_update(self) -> str | None:
        """One look at the record: swap if it names a new release. Returns "swapped", "refused" or None."""
        signature = self._signature()
        if signature is None or signature == self._seen:
            return None
        self._seen = signature
        try:
            record = self._read_record()
        except (OSError, json.JSONDecodeError) as err:
            return self._refuse(str(self.record_path), f"unreadable production record: {err}", [])
        if record is None or (record.get("release") and record.get("release") == self.current.id):
            return None
        name = str(record.get("release") or record.get("model"))
        log.info("production record names release %s: loading it beside %s", name, self.current.id)
        try:
            fresh = load_release(release_paths(record, self.root), self.model_config, self.bm25_config)
        except ReleaseInvalid as err:
            return self._refuse(name, str(err), [c.as_dict() for c in err.checks])
        except (ValueError, OSError) as err:
            return self._refuse(name, str(err), [])
        with self._swap_lock:
            old, self._current = self._current, fresh
        self.swaps.append({"from": old.id if old else None, "to": fresh.id, "at": _now(), "load_s": round(fresh.load_s, 2)})
        log.info("swapped release %s -> %s (loaded and verified in %.1f s); requests in flight finish on %s",
                 old.id if old else None, fresh.id, fresh.load_s, old.id if old else None)
        return "swapped"

    def _refuse(self, name: str, reason: str, checks: list[dict]) -> str:
        self.refusals.append({"release": name, "at": _now(), "reason": reason, "checks": checks})
        del self.refusals[:-20]
        log.error("refused release %s, still serving %s: %s", name, self._current.id if self._current else None, reason)
        return "refused"

    # ---- search ---------------------------------------------------------------------------------
    def parse(self, q: str | None, k: int | None, mode: str | None, reasoning: bool,
              budget_ms: int | None) -> Query:
        """Check a request's parameters against ``serve:``; raises BadRequest naming the parameter."""
        cfg = self.config
        text = (q or "").strip()
        if not text:
            raise BadRequest("q is required: the query text, e.g. /search?q=parse+a+date")
        if len(text) > cfg.max_query_chars:
            raise BadRequest(f"q is {len(text)} characters long; at most {cfg.max_query_chars} are accepted")
        k = cfg.default_k if k is None else k
        if not 1 <= k <= cfg.max_k:
            raise BadRequest(f"k must be between 1 and {cfg.max_k}, got {k}")
        mode = mode or self.current.default_mode
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if reasoning and mode == "bm25":
            raise BadRequest("reasoning needs the model: use mode=dense or mode=hybrid")
        if budget_ms is not None and not reasoning:
            raise BadRequest("budget_ms applies to reasoning only: add reasoning=true")
        if budget_ms is not None and not 1 <= budget_ms <= cfg.max_reasoning_budget_ms:
            raise BadRequest(f"budget_ms must be between 1 and {cfg.max_reasoning_budget_ms}, got {budget_ms}")
        return Query(text, k, mode, reasoning, budget_ms if budget_ms is not None else
                     (cfg.reasoning_budget_ms if reasoning else None))

    def search(self, query: Query) -> dict:
        """Answer one parsed query on the release current when it starts."""
        release = self.current  # read once: a swap during this request does not affect it
        started = time.perf_counter()
        self._count("requests")
        try:
            results, reasoning = self._rank(release, query)
        except (Busy, FutureTimeout, Unavailable) as err:
            self._count("refused_requests")
            raise Unavailable(str(err) or "the model did not answer in time") from err
        except Exception:
            self._count("errors")
            raise
        body = {"query": query.q, "mode": query.mode, "k": query.k, "release": release.id,
                "took_ms": round((time.perf_counter() - started) * 1000, 2), "results": results}
        if reasoning is not None:
            body["reasoning"] = reasoning
        return body

    def _rank(self, release: LoadedRelease, query: Query) -> tuple[list[dict], dict | None]:
        depth = query.k if query.mode == "dense" else max(query.k, self.config.fusion_depth)
        reasoning = None
        dense: list[tuple[str, float]] = []
        if query.mode in ("dense", "hybrid"):
            if query.reasoning:
                vectors, reasoning = self._reason(release, query)
                dense = dense_rankings(release, [query.q], depth, vectors=vectors)[0]
            else:
                future = self.batcher.submit(release, query.q, depth)
                try:
                    dense = future.result(timeout=self.config.request_timeout_s)
                except FutureTimeout:
                    future.cancel()
                    raise
        if query.mode == "dense":
            ranking = [(d, s, {}) for d, s in dense]
        else:
            lexical = bm25_rank(release.bm25, release.index.doc_ids, [query.q], depth)[0]
            if query.mode == "bm25":
                ranking = [(d, s, {}) for d, s in lexical[: query.k]]
            else:
                dense_rank = {d: i for i, (d, _) in enumerate(dense, start=1)}
                lexical_rank = {d: i for i, (d, _) in enumerate(lexical, start=1)}
                fused = rrf([[d for d, _ in dense], [d for d, _ in lexical]], self.rrf_k, depth=query.k)
                ranking = [(d, s, {"dense_rank": dense_rank.get(d), "bm25_rank": lexical_rank.get(d)}) for d, s in fused]
        return [self._result(release, rank, d, s, extra) for rank, (d, s, extra) in enumerate(ranking, start=1)], reasoning

    def _reason(self, release: LoadedRelease, query: Query):
        budget_s = query.budget_ms / 1000.0
        with self._reason_lock:
            started = time.perf_counter()
            out = release.embedder.encode_queries([query.q], reasoning=True, return_traces=True, max_time=budget_s)
            took = time.perf_counter() - started
        tokens = (out.trace_tokens or [0])[0]
        emitted = bool(out.emitted and out.emitted[0])
        cap = release.embedder.config.max_new_tokens
        return out.vectors, {"trace": (out.traces or [""])[0].strip(), "emitted_token": emitted,
                             "generated_tokens": tokens, "max_new_tokens": cap, "budget_ms": query.budget_ms,
                             "took_ms": round(took * 1000, 1),
                             "stopped_by_budget": not emitted and tokens < cap and took >= budget_s}

    def _result(self, release: LoadedRelease, rank: int, doc_id: str, score: float, extra: dict) -> dict:
        doc = release.documents.get(doc_id) or {"title": "", "text": ""}
        snippet = " ".join(doc["text"].split())
        if len(snippet) > self.config.snippet_chars:
            snippet = snippet[: self.config.snippet_chars].rsplit(" ", 1)[0] + " …"
        return {"rank": rank, "id": doc_id, "score": round(float(score), 6), "title": doc["title"],
                "snippet": snippet, **extra}

    # ---- status ---------------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] += 1

    def health(self) -> dict:
        release = self._current
        return {"status": "ok" if release is not None else "unavailable",
                "release": release.id if release else None,
                "uptime_s": round(time.time() - self.started_at, 1),
                "watching": None if self.fixed is not None else str(self.record_path),
                **self.counts,
                "batcher": self.batcher.stats() if self.batcher else None,
                "swaps": self.swaps[-5:],
                "refused_releases": self.refusals[-5:]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
