"""`searchr3 index build` over a user's corpus, then `searchr3 search` against that snapshot (tiny model)."""
import json
import shutil
from pathlib import Path

from searchr3.cli import main
from searchr3.index.snapshot import read_manifest


def write_corpus(folder):
    folder.mkdir()
    docs = [{"_id": "d1", "title": "Fox", "text": "The quick brown fox jumps."},
            {"_id": "d2", "title": "", "text": "def add(a, b): return a + b"},
            {"_id": "d3", "title": "Search", "text": "Search engines rank documents."}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder


def test_index_build_then_search(tmp_path, tiny_model_dir, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    out = tmp_path / "index"
    assert main(["index", "build", "--corpus", str(corpus), "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["count"] == 3 and manifest["corpus"] == str(corpus)
    assert manifest["model_checksum"] == json.loads((tiny_model_dir / "manifest.json").read_text())["weights_sha256"]
    capsys.readouterr()

    assert main(["search", "quick fox", "-k", "2", "--index", str(out), "--model", str(tiny_model_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].lstrip().startswith("1.") and lines[1].lstrip().startswith("2.")
    assert {line.split()[2] for line in lines} <= {"d1", "d2", "d3"}

    assert main(["search", "quick fox", "-k", "1", "--reasoning", "--index", str(out), "--model", str(tiny_model_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("reasoning (") and "1." in printed


def test_index_build_rejects_a_bad_corpus(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{not json}\n')
    assert main(["index", "build", "--corpus", str(corpus), "--model", str(tiny_model_dir), "--out", str(tmp_path / "i")]) == 3
    assert "corpus.jsonl:2: malformed_json" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_index_build_leaves_the_pipeline_snapshots_alone(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Default output indexes/custom; the DVC-tracked indexes/production (or indexes/rl) only with --force."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    corpus = write_corpus(tmp_path / "corpus")
    build = ["index", "build", "--corpus", str(corpus), "--model", str(tiny_model_dir)]
    assert main(build) == 0
    assert read_manifest(tmp_path / "indexes" / "custom")["count"] == 3
    assert "--index indexes/custom" in capsys.readouterr().err

    for out in ("indexes/production", "indexes/rl", "./indexes/production/"):
        assert main([*build, "--out", out]) == 2
        assert "is the pipeline's" in capsys.readouterr().err
    assert not (tmp_path / "indexes" / "production").exists() and not (tmp_path / "indexes" / "rl").exists()
    assert main([*build, "--out", "indexes/production", "--force"]) == 0
    assert read_manifest(tmp_path / "indexes" / "production")["count"] == 3
