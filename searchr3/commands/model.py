"""``searchr3 model materialize``: the base-model stage."""
from __future__ import annotations

import json

from searchr3.config import load_params, section
from searchr3.model.config import ModelConfig


def register(sub) -> None:
    p = sub.add_parser("model", help="base model operations")
    verbs = p.add_subparsers(dest="verb", required=True)
    m = verbs.add_parser("materialize", help="load model.base, add <|embed_token|>, save a save_pretrained folder")
    m.add_argument("--out", default="models/base", help="output folder (default: models/base)")
    m.add_argument("--source", default=None, help="override model.base from params.yaml")
    m.set_defaults(func=_materialize)


def _materialize(args) -> int:
    from searchr3.model.materialize import materialize

    source = args.source
    if source is None:
        source = section(load_params(args.params, args.profile), "model", ModelConfig).base
    manifest = materialize(source, args.out)
    print(json.dumps(manifest, indent=2))
    return 0
