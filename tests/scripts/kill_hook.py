"""For the scripts beside it (run by tests under ``accelerate launch``): a real crash at a known point."""
import os
import signal


def die_after_checkpoints(count: int) -> None:
    """Rank 0 SIGKILLs itself right after its ``count``-th checkpoint is committed (``count`` 0: nothing)."""
    if not count or int(os.environ.get("RANK", "0")) != 0:
        return
    from searchr3.train import common

    real_save, saved = common.save_checkpoint, []

    def save_then_die(folder, state):
        real_save(folder, state)
        saved.append(state["state"]["step"])
        if len(saved) == count:
            os.kill(os.getpid(), signal.SIGKILL)

    common.save_checkpoint = save_then_die
