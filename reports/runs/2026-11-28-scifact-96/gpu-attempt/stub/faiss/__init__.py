"""Scratch stub for the GPU machine (no faiss wheel carried): exact inner-product search with numpy, enough for
dense_search (IndexFlatIP add/search). Anything else fails loudly."""
import numpy as np


class IndexFlatIP:
    def __init__(self, dim):
        self.d = dim
        self.x = np.zeros((0, dim), dtype=np.float32)

    @property
    def ntotal(self):
        return len(self.x)

    def add(self, x):
        self.x = np.concatenate([self.x, np.asarray(x, dtype=np.float32)])

    def search(self, q, k):
        s = np.asarray(q, dtype=np.float32) @ self.x.T
        idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, idx, axis=1), idx


class Index:  # annotations only
    pass


def __getattr__(name):
    raise AttributeError(f"faiss stub: {name} is not available on the GPU machine")
