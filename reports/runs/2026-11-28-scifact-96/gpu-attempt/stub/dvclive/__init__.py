"""Scratch stub for the GPU machine (no dvclive there). next_step appends a wall-clock time per step to $STEP_TIMES."""
import os, time


class Live:
    def __init__(self, *a, **k):
        self.step = 0
        self._metrics = {}

    def log_metric(self, name, value, *a, **k):
        self._metrics[name] = value

    def next_step(self, *a, **k):
        path = os.environ.get("STEP_TIMES")
        if path:
            with open(path, "a") as f:
                f.write(f"{self.step}\t{time.time():.3f}\t{self._metrics.get('dev/ndcg@10', '')}\t{self._metrics.get('loss/total', '')}\n")
        self._metrics = {}

    def __getattr__(self, name):
        return lambda *a, **k: None
