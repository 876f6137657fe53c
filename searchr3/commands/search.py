"""``searchr3 search "QUERY"``: rank documents of the production index snapshot."""
from __future__ import annotations

import textwrap
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("search", help="search the production index")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="documents to show (default 10)")
    p.add_argument("--reasoning", action="store_true", help="let the model analyse the query first (and show it)")
    p.add_argument("--index", default=None, help="snapshot folder (default: the production record's)")
    p.add_argument("--model", default=None, help="model folder (default: the production record's)")
    p.set_defaults(func=_search)


def _search(args) -> int:
    from searchr3.config import load_params, section
    from searchr3.errors import ArtifactError
    from searchr3.data.beir import read_corpus
    from searchr3.index.snapshot import load_snapshot, read_manifest
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder
    from searchr3.production import production_index, production_model

    index_dir = args.index or production_index()
    model_dir = args.model or production_model()
    manifest = read_manifest(index_dir)
    config = section(load_params(args.params, args.profile, args.overrides), "model", ModelConfig)
    embedder = Embedder.from_pretrained(model_dir, config=config)
    if manifest.get("model_checksum") != embedder.checksum:
        raise ArtifactError(Path(index_dir) / "manifest.json", None, "index_model_mismatch",
                            f"the index was encoded by model {str(manifest.get('model_checksum'))[:12]}, not by "
                            f"{model_dir} ({embedder.checksum[:12]}); its scores would be meaningless. Rebuild it: "
                            f"searchr3 index build --model {model_dir} --corpus CORPUS --out {index_dir}")
    index = load_snapshot(index_dir)
    texts = read_corpus(manifest["corpus"]) if manifest.get("corpus") else {}
    q = embedder.encode_queries([args.query], reasoning=args.reasoning, return_traces=args.reasoning)
    if args.reasoning:
        state = "emitted the embed token" if q.fallbacks == 0 else "did not emit the embed token (appended)"
        print(f"reasoning ({state}):\n{textwrap.indent(q.traces[0].strip(), '  ')}\n")
    scores, ids = index.search(q.vectors, args.k)
    for rank, (doc_id, score) in enumerate(zip(ids[0], scores[0]), start=1):
        preview = " ".join(texts.get(doc_id, "").split())[:160]
        print(f"{rank:>3}. {score:.4f}  {doc_id}  {preview}")
    return 0
