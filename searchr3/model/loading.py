"""One lock around building a model from its files, for every loader in the process.

``transformers``' ``from_pretrained`` is not thread-safe: while it builds a model it switches torch's default
device to ``meta`` for the whole process, so a second thread loading at the same time (Dask workers running as
threads, a server loading a new release beside the one it serves) gets modules on ``meta`` ("Cannot copy out of
meta tensor"). Loads are short next to what follows them, so they take turns.
"""
from __future__ import annotations

import threading

LOAD_LOCK = threading.Lock()
