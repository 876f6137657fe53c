"""Micro-batching of dense retrieval: one worker thread owns the model's direct-query path.

Request threads :meth:`MicroBatcher.submit` ``(release, query, depth)`` and wait on a Future. The worker
takes the first waiting job, then any that arrive within ``max_wait_ms`` (up to ``max_batch``), encodes
the queries of each release in one forward pass and searches FAISS once per release. Jobs carry the
release they started on, so a hot swap never changes the release of a request already queued: a batch
that spans a swap is split into one group per release.

A full queue refuses new work at once (:class:`Busy`) instead of letting latency grow without bound.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The queue is full: the service is overloaded; the caller should retry later."""


@dataclass
class Job:
    release: object  # searchr3.serve.loaded.LoadedRelease
    text: str
    depth: int
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, max_batch: int = 16, max_wait_ms: float = 2.0, queue_size: int = 256):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="searchr3-batcher", daemon=True)
        self.batches = 0
        self.queries = 0
        self.largest_batch = 0
        self._thread.start()

    def submit(self, release, text: str, depth: int) -> Future:
        """Queue one query; the Future resolves to ``[(doc_id, score), ...]`` (best first, at most ``depth``)."""
        job = Job(release, text, depth)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} queries are already waiting for the model") from None
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict:
        return {"batches": self.batches, "queries": self.queries, "largest_batch": self.largest_batch,
                "mean_batch": round(self.queries / self.batches, 2) if self.batches else None,
                "waiting": self.waiting}

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._process(batch)
            if stop:
                return

    def _process(self, batch: list[Job]) -> None:
        groups: dict[int, list[Job]] = {}
        for job in batch:
            groups.setdefault(id(job.release), []).append(job)
        self.batches += 1
        self.queries += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for jobs in groups.values():
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                rankings = dense_rankings(live[0].release, [j.text for j in live], max(j.depth for j in live))
            except Exception as err:  # noqa: BLE001 - the requests get the error; the worker keeps running
                log.exception("dense search failed for a batch of %d", len(live))
                for j in live:
                    j.future.set_exception(err)
                continue
            for j, ranking in zip(live, rankings):
                j.future.set_result(ranking[: j.depth])


def dense_rankings(release, texts: list[str], depth: int, vectors=None) -> list[list[tuple[str, float]]]:
    """Encode ``texts`` (direct queries) unless ``vectors`` are given, and rank the release's index."""
    if vectors is None:
        vectors = release.embedder.encode_queries(texts).vectors
    scores, ids = release.index.search(vectors, depth)
    return [[(doc_id, float(score)) for doc_id, score in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(ids, scores)]
