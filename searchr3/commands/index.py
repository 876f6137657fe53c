"""``searchr3 index build``: index your own corpus (a BEIR ``corpus.jsonl`` folder) with a model.

The snapshot goes to ``indexes/custom`` by default. The pipeline's own snapshots (``indexes/production``,
``indexes/rl``) are DVC outputs: writing over one makes ``dvc status`` report it changed and the next
``dvc repro``/``dvc checkout`` puts the pipeline's back, so the command refuses them unless ``--force``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from searchr3 import stages
from searchr3.commands.stage import dump
from searchr3.paths import PATHS

DEFAULT_OUT = "indexes/custom"  # a user's corpus: not a pipeline (DVC) output, so not in searchr3.paths
PIPELINE_SNAPSHOTS = (PATHS["index"], PATHS["rl_index"])


def register(sub) -> None:
    p = sub.add_parser("index", help="build a FAISS index snapshot of a corpus")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="encode corpus.jsonl with a model and save a snapshot")
    b.add_argument("--corpus", required=True, help="folder with corpus.jsonl ({_id, title, text} lines)")
    b.add_argument("--model", default=None, help="model folder (default: the production model)")
    b.add_argument("--out", default=DEFAULT_OUT, help=f"snapshot folder (default: {DEFAULT_OUT})")
    b.add_argument("--force", action="store_true",
                   help=f"allow --out to be one of the pipeline's DVC-tracked snapshots ({', '.join(PIPELINE_SNAPSHOTS)})")
    b.set_defaults(func=_build)


def pipeline_snapshot(out: str | Path) -> str | None:
    """The pipeline snapshot folder ``out`` is (or lies inside), relative to the working directory; else None."""
    target = Path(out).resolve()
    for snapshot in PIPELINE_SNAPSHOTS:
        folder = Path(snapshot).resolve()
        if target == folder or folder in target.parents:
            return snapshot
    return None


def _build(args) -> int:
    from searchr3.config import load_params
    from searchr3.production import production_model

    owned = pipeline_snapshot(args.out)
    if owned and not args.force:
        print(f"error: {args.out} is the pipeline's {owned} (a DVC output of dvc.yaml); `dvc repro` or `dvc checkout` "
              f"would replace what you write there. Use another --out (default {DEFAULT_OUT}) or add --force.",
              file=sys.stderr)
        return 2
    model = args.model or production_model()
    params = load_params(args.params, args.profile, args.overrides)
    summary = stages.index(params, model=model, corpus_dir=args.corpus, out=args.out)
    print(dump(summary))
    print(f"search it: searchr3 search \"QUERY\" --index {args.out} --model {model}", file=sys.stderr)
    return 0
