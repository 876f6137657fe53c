"""``searchr3 index build``: index your own corpus (a BEIR ``corpus.jsonl`` folder) with a model."""
from __future__ import annotations

from searchr3 import stages
from searchr3.commands.stage import dump
from searchr3.paths import PATHS


def register(sub) -> None:
    p = sub.add_parser("index", help="build a FAISS index snapshot of a corpus")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="encode corpus.jsonl with a model and save a snapshot")
    b.add_argument("--corpus", required=True, help="folder with corpus.jsonl ({_id, title, text} lines)")
    b.add_argument("--model", default=None, help="model folder (default: the production model)")
    b.add_argument("--out", default=PATHS["index"], help="snapshot folder (default: indexes/production)")
    b.set_defaults(func=_build)


def _build(args) -> int:
    from searchr3.config import load_params
    from searchr3.production import production_model

    model = args.model or production_model()
    summary = stages.index(load_params(args.params, args.profile), model=model, corpus_dir=args.corpus, out=args.out)
    print(dump(summary))
    return 0
