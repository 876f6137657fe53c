"""``searchr3 stage NAME``: run one pipeline stage (what each ``dvc.yaml`` stage calls)."""
from __future__ import annotations

import logging
import sys
import time

from searchr3 import stages


def register(sub) -> None:
    p = sub.add_parser("stage", help="run one pipeline stage with the standard paths (used by dvc.yaml)")
    p.add_argument("name", choices=stages.STAGES)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from searchr3.config import load_params
    from searchr3.validate.runner import ValidationFailed

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params, args.profile)
    fn = getattr(stages, args.name)
    kwargs = {"progress": False} if args.no_progress and "progress" in fn.__code__.co_varnames else {}
    started = time.time()
    try:
        summary = fn(params, **kwargs)
    except ValidationFailed as err:
        print(str(err), file=sys.stderr)
        return 1
    if args.name != "evaluate":
        print(stages.dump(summary if not isinstance(summary, dict) or len(str(summary)) < 4000 else {"done": args.name}))
    else:
        print(open(stages.PATHS["report"]).read())
    print(f"stage {args.name} finished in {time.time() - started:.1f} s", file=sys.stderr)
    return 0
