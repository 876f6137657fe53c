"""The search service: the promoted release served over HTTP, hot-swapped when promotion changes it.

``config``   the ``serve:`` section of params.yaml
``loaded``   a release loaded into memory (model, index, documents, BM25), verified first
``batcher``  one worker thread that micro-batches query encoding + FAISS search
``service``  the current release, the watcher that swaps it, and search itself (dense | bm25 | hybrid)
``app``      the FastAPI application (``/search``, ``/health``, ``/release``, the page at ``/``)
"""
