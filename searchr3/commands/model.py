"""``searchr3 model materialize``: the base-model stage. ``searchr3 model card PATH``: a Hugging Face model card.
``searchr3 model verify PATH...``: check model folders and index snapshots against their sealed manifests.
``searchr3 model delta MODEL --base BASE --out DIR``: a trained model as a small difference from its base.
``searchr3 model apply DELTA --base BASE --out DIR``: the model a delta rebuilds, as a model folder."""
from __future__ import annotations

import json

from searchr3.config import load_params, section
from searchr3.errors import ConfigError
from searchr3.model.config import ModelConfig


def register(sub) -> None:
    p = sub.add_parser("model", help="base model operations")
    verbs = p.add_subparsers(dest="verb", required=True)
    m = verbs.add_parser("materialize", help="load model.base, add <|embed_token|>, save a save_pretrained folder")
    m.add_argument("--out", default="models/base", help="output folder (default: models/base)")
    m.add_argument("--source", default=None, help="override model.base from params.yaml")
    m.set_defaults(func=_materialize)
    c = verbs.add_parser("card", help="write a Hugging Face model card (README.md with YAML metadata) for a model folder")
    c.add_argument("path", help="model folder (save_pretrained layout, with manifest.json)")
    c.add_argument("--metrics", default="metrics/eval.json",
                   help="evaluation metrics for model-index (default: metrics/eval.json when it exists)")
    c.add_argument("--system", default=None, help="the metrics row that is this model (default: from its manifest: rl, sft, base)")
    c.add_argument("--base-model", default=None, help="hub id of the base model (default: followed through the manifests)")
    c.add_argument("--data-manifest", default="data/manifest.json", help="data stage manifest naming the datasets")
    c.add_argument("--out", default=None, help="where to write (default: PATH/README.md)")
    c.set_defaults(func=_card)
    v = verbs.add_parser("verify", help="check model folders or index snapshots against the sha256 in their manifest")
    v.add_argument("paths", nargs="+", help="model folders (manifest.json + *.safetensors) or index snapshots")
    v.set_defaults(func=_verify)
    d = verbs.add_parser("delta", help="write a trained model as a small low-rank difference from its base "
                                       "(a few MB; `searchr3 evaluate --model DIR` rebuilds it on the base)")
    d.add_argument("path", help="the trained model folder (e.g. models/rl)")
    d.add_argument("--base", default="models/base", help="the model it was trained from (default: models/base)")
    d.add_argument("--out", required=True, help="the delta folder to write")
    d.set_defaults(func=_delta)
    a = verbs.add_parser("apply", help="write the model a delta rebuilds on its base as a model folder "
                                       "(e.g. to train on from a committed delta)")
    a.add_argument("path", help="the delta folder")
    a.add_argument("--base", default=None, help="the base model folder (default: the one the delta's manifest names)")
    a.add_argument("--out", required=True, help="the model folder to write")
    a.set_defaults(func=_apply)


def _materialize(args) -> int:
    from searchr3.model.materialize import materialize

    source = args.source
    if source is None:
        source = section(load_params(args.params, args.profile, args.overrides), "model", ModelConfig).base
    manifest = materialize(source, args.out)
    print(json.dumps(manifest, indent=2))
    return 0


def _card(args) -> int:
    import sys
    from pathlib import Path

    from searchr3.model.card import datasets_of, write_model_card

    folder = Path(args.path)
    if not (folder / "config.json").is_file():
        print(f"error: {folder}: not a model folder (no config.json)", file=sys.stderr)
        return 2
    metrics = _json_file(Path(args.metrics))
    data_manifest = _json_file(Path(args.data_manifest))
    has_params = Path(args.params).exists()
    if args.overrides and not has_params:
        raise ConfigError(f"--set needs the parameters file it overrides; {args.params} not found")
    config = section(load_params(args.params, args.profile, args.overrides), "model", ModelConfig) if has_params else None
    out = write_model_card(folder, args.out, metrics=metrics, system=args.system, base_model=args.base_model,
                           datasets=datasets_of(data_manifest), config=config)
    print(f"wrote {out}" + ("" if metrics else f" (no evaluation: {args.metrics} not found)"))
    return 0


def _json_file(path):
    from searchr3.data.errors import DataError

    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, "invalid-json", err.msg) from None


def _verify(args) -> int:
    """Exit 0 when every folder verifies; the first failure is an ArtifactError (exit 4) naming the file."""
    from pathlib import Path

    from searchr3.errors import ArtifactError
    from searchr3.integrity import verify_artifact
    from searchr3.model.materialize import verify_model

    for path in map(Path, args.paths):
        if (path / "index.faiss").exists():
            from searchr3.index.snapshot import load_snapshot

            index = load_snapshot(path)  # the sealed files, then the vectors' norms and labels
            print(f"{path}: ok (index snapshot, {len(index)} vectors, every file sha256-verified)")
        elif path.is_dir() and any(path.glob("*.safetensors")):
            if verify_model(path) is None:
                raise ArtifactError(path / "manifest.json", None, "missing_manifest",
                                    "no manifest.json: a plain Hugging Face folder, nothing to verify against")
            print(f"{path}: ok (model, every file sha256-verified)")
        else:
            files = verify_artifact(path)["files"]
            print(f"{path}: ok ({len(files)} files sha256-verified)")
    return 0


def _delta(args) -> int:
    from searchr3.model.delta import describe, write_delta

    manifest = write_delta(args.base, args.path, args.out)
    print(f"wrote {args.out}: {describe(manifest)}")
    print(f"rescore: searchr3 evaluate --model {args.out} --base {args.base} --dataset DATASET --split test")
    return 0


def _apply(args) -> int:
    from searchr3.model.delta import apply_delta

    manifest = apply_delta(args.path, args.out, args.base)
    print(f"wrote {args.out}: weights sha256 {manifest['weights_sha256'][:12]}, from {args.path} on {manifest['base_model']}")
    return 0
