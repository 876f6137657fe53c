"""Reliability: try what a demanding user would, as a user would, and count how searchr3 answers.

Every try runs the real command line (``searchr3 ...`` in a subprocess, its own folder, offline)
and is classified from its exit code, its stderr and, where it exits 0, its output:

  rejected      refused with a documented exit code (2 usage/config, 3 bad data, 4 damaged artifact)
                and one ``searchr3: error:`` line naming the rule; or, for a rule documented as a
                warning (``shared_query``), exit 0 with a warning naming it and the defect kept out
                of the output ("flagged")
  tracebacks    a Python traceback, exit 1 (unexpected), another exit code, or a hang (timeout)
  accepted      exit 0 where a refusal was due and the output is unchanged; documented harmless
                variants (BOM, CRLF, ...) that give the clean output also land here, listed apart
  silent_wrong  exit 0 and the output is not what the clean input gives: the defect reached
                ``data/`` (or a harmless variant changed the result)

Categories (each a function returning tries, all through the same ``Try``/``Outcome`` plumbing):

  bad_input  corruptions of a SciFact BEIR copy, of the built-in code-search set (as a BEIR
             export and as a source root), of Hugging Face datasets (a local save_to_disk folder
             and a local dataset repo read by ``load_dataset``) and of NQ-open, each run through
             ``searchr3 validate --dataset`` and ``searchr3 data build`` where the command applies
  config     broken parameters: missing --params file, broken YAML, unknown key, unknown source
             type, unknown profile (flag and SEARCHR3_PROFILE), a number YAML reads as text
  damaged_artifact
             30 damages of a tiny model folder and its index snapshot (flipped bytes in the weights,
             the vectors, a FAISS label; truncated, deleted, swapped or edited files; another model's
             files), each followed by ``searchr3 search`` after a clean search warmed the hash cache:
             rejected = exit 4 naming the file; silent_wrong = exit 0 with other results
  kill9      ``searchr3 stage data|sft|rl|index`` of the tiny profile (SFT 6 and RL 4 steps) killed with
             SIGKILL at a seeded random moment, then rerun: rejected = handled as due (the rerun's
             result is bit-identical to an uninterrupted run's and no temporary file is left);
             silent_wrong = a different result; accepted/orphans_left = temporary files left behind.
             8 kills per stage (32), 3 with --quick (12)
  concurrent two ``searchr3 stage NAME`` at once on the same folder, for data, sft, rl and index:
             rejected = the second exits 5 at once with one line and the first ends with the
             uninterrupted result; accepted/no_overlap = the first ended before the second asked

    python benchmarks/reliability.py --quick          # small copies of the inputs (a few minutes)
    python benchmarks/reliability.py                  # full SciFact and NQ-open copies
    python benchmarks/reliability.py --only beir --json reports/reliability.json

Runs two tries at a time (2 CPU cores). Ends with exactly one line:
``reliability: tried N rejected R tracebacks T accepted A silent_wrong W``.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false"}
BUCKETS = ("rejected", "tracebacks", "accepted", "silent_wrong")
TIMEOUT_S = 240
CODE_MODULES = ["argparse.py", "textwrap.py", "shlex.py", "csv.py", "calendar.py", "fractions.py", "statistics.py",
                "pathlib.py", "string.py", "difflib.py", "configparser.py", "ipaddress.py", "json"]
CODE_OPTIONS = {"test_queries": 15, "test_docs": 50, "dev_queries": 5, "dev_docs": 20, "train_pairs": 80}
MINING = {"method": "bm25", "depth": 10, "negatives": 2}


def searchr3_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``python -m searchr3.cli``."""
    script = Path(sys.executable).parent / "searchr3"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "searchr3.cli"]


# ------------------------------------------------------------------------------------------ tries


@dataclass
class Outcome:
    bucket: str  # one of BUCKETS
    kind: str  # refused | flagged | harmless | ignored | changed | traceback | hang | unexpected_code ...
    rc: int | None
    seconds: float
    line: str = ""  # the error or warning line, or a note
    named_rule: str | None = None


@dataclass
class Try:
    category: str
    base: str
    case: str
    command: str  # validate | build | (later categories: their own)
    expect: str  # reject | warn | harmless
    rule: str | None  # the rule (or config phrase) the answer must name
    run: Callable[[Path], Outcome] = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.category}/{self.base}/{self.case} via {self.command}"


def run_cli(args: list[str], cwd: Path, env_extra: dict | None = None,
            timeout: int = TIMEOUT_S) -> tuple[int | None, str, str, float]:
    env = {**os.environ, **OFFLINE, "PREFECT_HOME": str(cwd / ".prefect"), "HF_DATASETS_CACHE": str(cwd / "hf_cache"),
           **(env_extra or {})}
    env.pop("SEARCHR3_DEBUG", None)
    if "SEARCHR3_PROFILE" not in (env_extra or {}):
        env.pop("SEARCHR3_PROFILE", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(searchr3_command() + args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, errors="replace")
        return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as err:
        err_text = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        return None, "", err_text, time.perf_counter() - start


def known_rules() -> set[str]:
    from searchr3.data.rules import RULES

    return set(RULES) | set(ARTIFACT_RULES)


def judge_failure(rc: int | None, stderr: str, seconds: float, expected_rule: str | None) -> Outcome:
    """Classify a non-zero exit (or a hang)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if rc is None:
        return Outcome("tracebacks", "hang", rc, seconds, f"no answer within {TIMEOUT_S} s")
    if "Traceback (most recent call last)" in stderr:
        return Outcome("tracebacks", "traceback", rc, seconds, last[:300])
    if rc not in (2, 3, 4, 5):
        return Outcome("tracebacks", "unexpected_code" if rc != 1 else "unexpected", rc, seconds, last[:300])
    errors = [ln for ln in lines if ln.startswith("searchr3: error:")]
    if len(errors) != 1 or errors[0] != last:
        return Outcome("rejected", "refused_unclear", rc, seconds, last[:300])
    named = expected_rule if expected_rule and expected_rule in last else \
        next((r for r in sorted(known_rules(), key=len, reverse=True) if r in last), None)
    kind = "refused" if named and (expected_rule is None or named == expected_rule) else "refused_other_rule"
    return Outcome("rejected", kind, rc, seconds, last[:300], named)


def classify(expect: str, rule: str | None, rc: int | None, stderr: str, seconds: float,
             output_same: bool | None, flagged_ok: bool = True) -> Outcome:
    """``output_same``: for a command with an output, whether it equals the clean input's (None: no output)."""
    if rc != 0:
        outcome = judge_failure(rc, stderr, seconds, rule)
        if expect == "harmless" and outcome.bucket == "rejected":
            outcome.kind = "refused_harmless"
        return outcome
    warnings = [ln for ln in stderr.splitlines() if "warning" in ln.lower()]
    if expect == "warn" and rule and any(rule in ln for ln in warnings) and flagged_ok:
        line = next(ln for ln in warnings if rule in ln)
        return Outcome("rejected", "flagged", rc, seconds, line[:300], rule)
    if expect == "harmless":
        if output_same is False:
            return Outcome("silent_wrong", "harmless_changed_output", rc, seconds, "exit 0, output differs from clean")
        return Outcome("accepted", "harmless", rc, seconds,
                       "exit 0, same output as the clean input" if output_same else "exit 0")
    if output_same is False:
        return Outcome("silent_wrong", "changed", rc, seconds, "exit 0, the defect reached the output")
    return Outcome("accepted", "ignored", rc, seconds, "exit 0" + (", output unchanged" if output_same else ""))


# ------------------------------------------------------------------------------------------ inputs


def jsonl_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> None:
    data = "".join(ln + newline for ln in lines).encode("utf-8", "surrogatepass")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def small_beir(src: Path, dst: Path, train_queries: int, test_queries: int, extra_docs: int) -> None:
    """A consistent slice of a BEIR folder: some judged train/test queries, their documents, distractors.

    Lines are copied verbatim. Queries whose text occurs twice in the source are left out, so the
    slice itself breaks no rule (SciFact has 2 such train/test pairs).
    """
    qrels = {split: [ln.split("\t") for ln in (src / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
             for split in ("train", "test")}
    query_lines = {json.loads(ln)["_id"]: ln for ln in jsonl_lines(src / "queries.jsonl")}
    texts = Counter(" ".join(json.loads(ln)["text"].split()).lower() for ln in query_lines.values())
    unique = {q for q, ln in query_lines.items() if texts[" ".join(json.loads(ln)["text"].split()).lower()] == 1}
    chosen = {}
    for split, n in (("train", train_queries), ("test", test_queries)):
        ids = list(dict.fromkeys(q for q, _, _ in qrels[split] if q in unique))[:n]
        chosen[split] = set(ids)
    docs = {d for split in qrels for q, d, _ in qrels[split] if q in chosen[split]}
    corpus = jsonl_lines(src / "corpus.jsonl")
    kept = [ln for i, ln in enumerate(corpus) if i < extra_docs or json.loads(ln)["_id"] in docs]
    (dst / "qrels").mkdir(parents=True)
    write_lines(dst / "corpus.jsonl", kept)
    write_lines(dst / "queries.jsonl", [ln for q, ln in query_lines.items() if q in chosen["train"] | chosen["test"]])
    for split in qrels:
        rows = ["\t".join(r) for r in qrels[split] if r[0] in chosen[split]]
        write_lines(dst / "qrels" / f"{split}.tsv", ["query-id\tcorpus-id\tscore", *rows])


def code_beir(dst: Path, root: Path) -> None:
    """The built-in code-search set (over ``root``) exported as one BEIR folder with train and test qrels."""
    from searchr3.data.codesearch import build_codesearch

    sets = build_codesearch(0, root=root, **CODE_OPTIONS)
    corpus = {**sets["train"].corpus, **sets["test"].corpus}
    queries = {**sets["train"].queries, **sets["test"].queries}
    (dst / "qrels").mkdir(parents=True)
    write_lines(dst / "corpus.jsonl", [json.dumps({"_id": d, "title": "", "text": t}) for d, t in corpus.items()])
    write_lines(dst / "queries.jsonl", [json.dumps({"_id": q, "text": t}) for q, t in queries.items()])
    for split in ("train", "test"):
        rows = [f"{q}\t{d}\t{s}" for q, judged in sets[split].qrels.items() for d, s in judged.items()]
        write_lines(dst / "qrels" / f"{split}.tsv", ["query-id\tcorpus-id\tscore", *rows])


def beir_records(folder: Path) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    corpus = [json.loads(ln) for ln in jsonl_lines(folder / "corpus.jsonl")]
    queries = [json.loads(ln) for ln in jsonl_lines(folder / "queries.jsonl")]
    qrels = {}
    for split in ("train", "test"):
        rows = [ln.split("\t") for ln in (folder / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
        qrels[split] = [{"query-id": q, "corpus-id": d, "score": int(s)} for q, d, s in rows]
    return corpus, queries, qrels


def hf_saved(src_beir: Path, dst: Path, corpus=None, queries=None, qrels=None) -> None:
    """A save_to_disk layout (corpus/, queries/, qrels/ with train and test) of a BEIR folder's records."""
    import datasets

    datasets.disable_progress_bars()
    c, q, r = beir_records(src_beir)
    corpus, queries, qrels = corpus if corpus is not None else c, queries if queries is not None else q, \
        qrels if qrels is not None else r
    datasets.Dataset.from_list(corpus).save_to_disk(str(dst / "corpus"))
    datasets.Dataset.from_list(queries).save_to_disk(str(dst / "queries"))
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in qrels.items()}).save_to_disk(
        str(dst / "qrels"))


def hf_repo(src_beir: Path, dst: Path) -> None:
    """A dataset repo (README ``configs:`` + JSON lines, the mteb/scifact layout) of a BEIR folder."""
    corpus, queries, qrels = beir_records(src_beir)
    (dst / "qrels").mkdir(parents=True)
    from searchr3.data.hf import dataset_card

    (dst / "README.md").write_text(dataset_card(sorted(qrels)))
    write_lines(dst / "corpus.jsonl", [json.dumps(r) for r in corpus])
    write_lines(dst / "queries.jsonl", [json.dumps(r) for r in queries])
    for split, rows in qrels.items():
        write_lines(dst / "qrels" / f"{split}.jsonl", [json.dumps(r) for r in rows])


def code_root(dst: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dst.mkdir(parents=True)
    for name in CODE_MODULES:
        src = stdlib / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / name)


@dataclass
class Base:
    """A clean input, its params (``{input}`` is replaced by the try's copy) and its clean build."""

    name: str
    path: Path  # folder (or file) holding the clean input
    source: dict  # the data.sources entry
    input_name: str  # name of the copy inside a try folder
    validate: bool = True
    fingerprint: str | None = None
    dropped: int = 0


def params_text(source: dict, input_path: Path) -> str:
    entry = json.loads(json.dumps(source).replace("{input}", str(input_path)))
    return json.dumps({"data": {"seed": 0, "sources": [entry], "mining": MINING}}, indent=1)


def prepare_bases(work: Path, quick: bool) -> dict[str, Base]:
    bases_dir = work / "bases"
    bases_dir.mkdir(parents=True)
    scifact = SHARED / "scifact"
    beir = bases_dir / "beir"
    if quick:
        small_beir(scifact, beir, train_queries=60, test_queries=30, extra_docs=200)
    else:
        shutil.copytree(scifact, beir)
    root = bases_dir / "code_root"
    code_root(root)
    code = bases_dir / "code"
    code_beir(code, root)
    hf = bases_dir / "hf"
    hf_saved(beir, hf)
    repo = bases_dir / "hf_repo"
    hf_repo(beir, repo)
    nq = bases_dir / "nq.jsonl.gz"
    lines = jsonl_lines(SHARED / "nq_open" / "nq-open-oracle.jsonl.gz")
    write_lines(nq, lines[:400] if quick else lines)
    beir_source = {"type": "beir", "path": "{input}", "train_split": "train", "eval_splits": ["test"]}
    return {
        "beir": Base("beir", beir, beir_source, "scifact"),
        "code": Base("code", code, beir_source, "code"),
        "hf": Base("hf", hf, {**beir_source, "type": "hf"}, "hf_saved"),
        "hf_repo": Base("hf_repo", repo, {**beir_source, "type": "hf"}, "hf_repo"),
        "nq": Base("nq", nq, {"type": "nq_open", "path": "{input}", "train_split": "train", "eval_splits": ["test"]},
                   "nq.jsonl.gz"),
        "codesearch": Base("codesearch", root, {"type": "codesearch", "train_split": "train",
                                                "eval_splits": ["dev", "test"],
                                                "options": {"root": "{input}", **CODE_OPTIONS}},
                           "stdlib", validate=False),
    }


def fingerprint(data_dir: Path) -> str:
    """What a data build produced: eval folders byte for byte, training rows and corpus as sorted JSON."""
    import datasets

    digest = hashlib.sha256()
    for path in sorted((data_dir / "eval").rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(data_dir).as_posix().encode() + b"\0" + path.read_bytes())
    for part in ("train", "train_corpus"):
        rows = datasets.load_from_disk(str(data_dir / part)).to_list()
        digest.update(json.dumps(sorted(rows, key=lambda r: json.dumps(r, sort_keys=True)), sort_keys=True).encode())
    return digest.hexdigest()


def dropped(data_dir: Path) -> int:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    return sum(s.get("train", {}).get("dropped_leaking_queries", 0) for s in manifest["sources"].values())


def copy_input(base: Base, folder: Path) -> Path:
    target = folder / base.input_name
    (shutil.copytree if base.path.is_dir() else shutil.copy)(base.path, target)
    return target


def build_baselines(bases: dict[str, Base], work: Path) -> None:
    """Each clean input must validate and build; its output's fingerprint is what a harmless variant must give."""
    def one(base: Base) -> None:
        folder = work / "clean" / base.name
        folder.mkdir(parents=True)
        target = copy_input(base, folder)
        (folder / "params.yaml").write_text(params_text(base.source, target))
        rc, out, err, _ = run_cli(["--params", "params.yaml", "data", "build", "--out", "data", "--no-progress"], folder)
        if rc != 0:
            raise SystemExit(f"clean {base.name} input does not build (exit {rc}):\n{err[-2000:]}")
        base.fingerprint, base.dropped = fingerprint(folder / "data"), dropped(folder / "data")
        if base.validate:
            rc, out, err, _ = run_cli(["--params", "params.yaml", "validate", "--dataset", str(target), "--split",
                                       "test", "--report-dir", "reports"], folder)
            if rc != 0:
                raise SystemExit(f"clean {base.name} input does not validate (exit {rc}):\n{out[-1500:]}{err[-1500:]}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, bases.values()))


# ------------------------------------------------------------------------------------------ corruptions
# A mutation edits the try's copy of the input in place: ``mutate(target)``.


def edit_record(file: str, index: int | str, change: Callable[[dict], dict | str]):
    """Rewrite one JSON-lines record (by position, or the line whose ``_id`` is given); ``change`` may return raw text."""
    def mutate(target: Path) -> None:
        path = target / file if target.is_dir() else target
        lines = jsonl_lines(path)
        i = index if isinstance(index, int) else next(k for k, ln in enumerate(lines) if json.loads(ln)["_id"] == index)
        new = change(json.loads(lines[i]))
        lines[i] = new if isinstance(new, str) else json.dumps(new)
        write_lines(path, lines)
    return mutate


def with_fields(**values):
    return lambda record: {**record, **values}


def without(key: str):
    return lambda record: {k: v for k, v in record.items() if k != key}


def raw_lines(file: str, change: Callable[[list[str]], list[str]], newline: str = "\n"):
    def mutate(target: Path) -> None:
        path = target / file if target.is_dir() else target
        write_lines(path, change(jsonl_lines(path)), newline)
    return mutate


def write_bytes(file: str, data: bytes):
    def mutate(target: Path) -> None:
        (target / file).write_bytes(data)
    return mutate


def replace_path(file: str, how: str):
    """Put a folder, FIFO, symlink loop or dangling symlink where ``file`` was (or delete it)."""
    def mutate(target: Path) -> None:
        path = target / file if file else target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        if how == "dir":
            path.mkdir()
        elif how == "fifo":
            os.mkfifo(path)
        elif how == "loop":
            os.symlink(path.name + ".loop", path)
            os.symlink(path.name, path.with_name(path.name + ".loop"))
        elif how == "dangling":
            os.symlink(path.name + ".gone", path)
        elif how == "file":
            path.write_text("not a folder\n")
    return mutate


def qrels_tsv(split: str, change: Callable[[list[list[str]]], list[list[str]]], header: bool = True,
              sep: str = "\t"):
    def mutate(target: Path) -> None:
        path = target / "qrels" / f"{split}.tsv"
        rows = [ln.split("\t") for ln in path.read_text().splitlines()[1:]]
        out = (["query-id\tcorpus-id\tscore"] if header else []) + [sep.join(r) for r in change(rows)]
        write_lines(path, out)
    return mutate


def first_test_pair(target: Path) -> tuple[str, str]:
    row = (target / "qrels" / "test.tsv").read_text().splitlines()[1].split("\t")
    return row[0], row[1]


def query_is_document(target: Path) -> None:
    qid, doc_id = first_test_pair(target)
    doc = next(json.loads(ln) for ln in jsonl_lines(target / "corpus.jsonl") if json.loads(ln)["_id"] == doc_id)
    edit_record("queries.jsonl", qid, with_fields(text=doc["text"]))(target)


def shared_query(target: Path) -> None:
    test_qid = first_test_pair(target)[0]
    train_qid = (target / "qrels" / "train.tsv").read_text().splitlines()[1].split("\t")[0]
    text = next(json.loads(ln)["text"] for ln in jsonl_lines(target / "queries.jsonl")
                if json.loads(ln)["_id"] == test_qid)
    edit_record("queries.jsonl", train_qid, with_fields(text=text))(target)


def numeric_ids(target: Path) -> None:
    """Harmless: integer ``_id`` values (SciFact's ids are digits) instead of strings."""
    for file in ("corpus.jsonl", "queries.jsonl"):
        lines = [json.loads(ln) for ln in jsonl_lines(target / file)]
        write_lines(target / file, [json.dumps({**r, "_id": int(r["_id"])}) for r in lines])


BIG = "x" * 10_000_000  # a 10 MB document


def beir_cases() -> list[tuple]:
    """(case, mutation, expect, rule) for a BEIR folder with train and test qrels."""
    c, q = "corpus.jsonl", "queries.jsonl"
    return [
        ("blank text beside a title", edit_record(c, 0, with_fields(title="A title", text="   ")), "reject",
         "empty_field"),
        ("non-string title", edit_record(c, 1, with_fields(title=12345)), "reject", "field_type"),
        ("nested title", edit_record(c, 2, with_fields(title={"en": "A title"})), "reject", "field_type"),
        ("null text", edit_record(c, 3, with_fields(text=None)), "reject", "missing_field"),
        ("text key missing", edit_record(c, 4, without("text")), "reject", "missing_field"),
        ("_id missing", edit_record(c, 5, without("_id")), "reject", "missing_field"),
        ("blank _id", edit_record(c, 6, with_fields(_id="  ")), "reject", "empty_field"),
        ("_id is a list", edit_record(c, 7, with_fields(_id=["a", "b"])), "reject", "field_type"),
        ("text is a number", edit_record(c, 8, with_fields(text=3.5)), "reject", "field_type"),
        ("text is NaN", edit_record(c, 9, lambda r: '{"_id": "%s", "title": "", "text": NaN}' % r["_id"]), "reject",
         "field_type"),
        ("duplicate document id", raw_lines(c, lambda ls: ls + [ls[0]]), "reject", "duplicate_id"),
        ("duplicate JSON key", edit_record(c, 10, lambda r: json.dumps(r)[:-1] + ', "text": "second value"}'),
         "reject", "duplicate_key"),
        ("NUL character in text", edit_record(c, 11, lambda r: {**r, "text": r["text"][:20] + "\x00" + r["text"][20:]}),
         "reject", "control_character"),
        ("escape character in title", edit_record(c, 12, with_fields(title="Colour \x1b[31mred\x1b[0m")), "reject",
         "control_character"),
        ("lone surrogate", edit_record(c, 13, lambda r: json.dumps(r)[:-1].replace('"text": "', '"text": "\\ud800', 1)
                                       + "}"), "reject", "invalid_unicode"),
        ("10 MB document", edit_record(c, 14, with_fields(text=BIG)), "reject", "text_too_long"),
        ("truncated last line", raw_lines(c, lambda ls: ls[:-1] + [ls[-1][:40]]), "reject", "malformed_json"),
        ("JSON array line", raw_lines(c, lambda ls: ls[:3] + ['["d1", "text"]'] + ls[3:]), "reject", "malformed_json"),
        ("Latin-1 byte", lambda t: (t / c).write_bytes((t / c).read_bytes().replace(b'"text": "', b'"text": "caf\xe9 ',
                                                                                    1)), "reject", "non_utf8"),
        ("empty corpus file", write_bytes(c, b""), "reject", "empty_file"),
        ("only blank lines", write_bytes(c, b"\n\n  \n"), "reject", "empty_file"),
        ("corpus file missing", replace_path(c, "missing"), "reject", "missing_file"),
        ("folder in place of corpus file", replace_path(c, "dir"), "reject", "not_a_file"),
        ("FIFO in place of corpus file", replace_path(c, "fifo"), "reject", "not_a_file"),
        ("symlink loop in place of corpus file", replace_path(c, "loop"), "reject", "not_a_file"),
        ("dangling symlink for queries file", replace_path(q, "dangling"), "reject", "missing_file"),
        ("query text is a number", edit_record(q, 0, with_fields(text=42)), "reject", "field_type"),
        ("blank query", edit_record(q, 1, with_fields(text=" \t ")), "reject", "empty_field"),
        ("NUL character in query", edit_record(q, 2, lambda r: {**r, "text": r["text"] + "\x00"}), "reject",
         "control_character"),
        ("5,000-character query", edit_record(q, 3, with_fields(text="why " * 1250)), "reject", "text_too_long"),
        ("duplicate query id", raw_lines(q, lambda ls: ls + [ls[0]]), "reject", "duplicate_id"),
        ("query identical to its document", query_is_document, "reject", "query_is_document"),
        ("header-only qrels", qrels_tsv("test", lambda rows: []), "reject", "no_relevant"),
        ("all scores -1", qrels_tsv("test", lambda rows: [[a, b, "-1"] for a, b, _ in rows]), "reject",
         "negative_score"),
        ("one negative score", qrels_tsv("test", lambda rows: [[*rows[0][:2], "-2"], *rows[1:]]), "reject",
         "negative_score"),
        ("all scores 0", qrels_tsv("test", lambda rows: [[a, b, "0"] for a, b, _ in rows]), "reject", "no_relevant"),
        ("fractional score", qrels_tsv("test", lambda rows: [[*rows[0][:2], "1.5"], *rows[1:]]), "reject",
         "qrels_score"),
        ("word as score", qrels_tsv("test", lambda rows: [[*rows[0][:2], "yes"], *rows[1:]]), "reject",
         "qrels_score"),
        ("two-column qrels row", qrels_tsv("test", lambda rows: [rows[0][:2], *rows[1:]]), "reject", "qrels_columns"),
        ("space-separated qrels", qrels_tsv("test", lambda rows: rows, sep=" "), "reject", "qrels_columns"),
        ("judged document missing", qrels_tsv("test", lambda rows: [*rows, [rows[0][0], "no-such-doc", "1"]]),
         "reject", "qrels_unknown_doc"),
        ("judged query missing", qrels_tsv("test", lambda rows: [*rows, ["no-such-query", rows[0][1], "1"]]),
         "reject", "qrels_unknown_query"),
        ("pair judged twice", qrels_tsv("test", lambda rows: [*rows, rows[0]]), "reject", "duplicate_judgement"),
        ("test qrels file missing", replace_path("qrels/test.tsv", "missing"), "reject", "missing_file"),
        ("dataset folder missing", replace_path("", "missing"), "reject", "missing_file"),
        ("dataset path is a file", replace_path("", "file"), "reject", "not_a_file"),
        ("shared train/test query text", shared_query, "warn", "shared_query"),
        # documented harmless variants: the output must equal the clean input's
        ("byte-order mark", lambda t: (t / c).write_bytes(b"\xef\xbb\xbf" + (t / c).read_bytes()), "harmless", None),
        ("CRLF line ends", raw_lines(c, lambda ls: ls, newline="\r\n"), "harmless", None),
        ("CRLF qrels", lambda t: (t / "qrels" / "test.tsv").write_bytes(
            (t / "qrels" / "test.tsv").read_bytes().replace(b"\n", b"\r\n")), "harmless", None),
        ("trailing blank lines", lambda t: (t / q).write_bytes((t / q).read_bytes() + b"\n\n\n"), "harmless", None),
        ("extra unknown fields", edit_record(c, 0, with_fields(metadata={"year": 2020}, url="https://example.org")),
         "harmless", None),
        ("integer ids", numeric_ids, "harmless", None),
        ("qrels without header", qrels_tsv("test", lambda rows: rows, header=False), "harmless", None),
    ]


def code_cases() -> list[tuple]:
    c = "corpus.jsonl"
    return [
        ("NUL byte in a function", edit_record(c, 0, lambda r: {**r, "text": r["text"] + "\n# \x00"}), "reject",
         "control_character"),
        ("ANSI escape in a function", edit_record(c, 1, lambda r: {**r, "text": r["text"] + '\nprint("\x1b[1m")'}),
         "reject", "control_character"),
        ("25,000-character function", edit_record(c, 2, lambda r: {**r, "text": r["text"] + "\n" + "#" * 25_000}),
         "reject", "text_too_long"),
        ("docstring identical to its function", query_is_document, "reject", "query_is_document"),
        # a different but equally valid text: exit 0 is right, the output legitimately differs
        ("tab-indented code", edit_record(c, 3, lambda r: {**r, "text": r["text"].replace("    ", "\t")}),
         "harmless_changed", None),
    ]


def hf_edit(corpus=None, queries=None, qrels=None):
    """Rewrite the save_to_disk copy from edited records (each argument: records -> records)."""
    def mutate(target: Path) -> None:
        c, q, r = beir_records(target.parent / "_beir")
        shutil.rmtree(target)
        hf_saved(target.parent / "_beir", target, corpus(c) if corpus else c, queries(q) if queries else q,
                 qrels(r) if qrels else r)
    return mutate


def at(index: int, **values):
    return lambda rows: [{**r, **values} if i == index else r for i, r in enumerate(rows)]


def hf_cases() -> list[tuple]:
    def truncate_arrow(target: Path) -> None:
        arrow = sorted((target / "corpus").glob("*.arrow"))[0]
        arrow.write_bytes(arrow.read_bytes()[:2000])

    def query_doc(target: Path) -> None:
        c, q, r = beir_records(target.parent / "_beir")
        pair = r["test"][0]
        doc = next(d for d in c if d["_id"] == pair["corpus-id"])
        q = [{**x, "text": doc["text"]} if x["_id"] == pair["query-id"] else x for x in q]
        shutil.rmtree(target)
        hf_saved(target.parent / "_beir", target, c, q, r)

    return [
        ("null text", hf_edit(corpus=at(0, text=None)), "reject", "missing_field"),
        ("text column renamed", hf_edit(corpus=lambda rows: [{"_id": r["_id"], "title": r["title"], "body": r["text"]}
                                                               for r in rows]), "reject", "missing_column"),
        ("NUL in text", hf_edit(corpus=lambda rows: at(1, text=rows[1]["text"] + "\x00")(rows)), "reject",
         "control_character"),
        ("blank text beside a title", hf_edit(corpus=at(2, text=" ")), "reject", "empty_field"),
        ("duplicate ids", hf_edit(corpus=lambda rows: rows + [rows[0]]), "reject", "duplicate_id"),
        ("negative score", hf_edit(qrels=lambda r: {**r, "test": at(0, score=-1)(r["test"])}), "reject",
         "negative_score"),
        ("float scores", hf_edit(qrels=lambda r: {**r, "test": [{**x, "score": 0.5} for x in r["test"]]}), "reject",
         "qrels_score"),
        ("test split missing", hf_edit(qrels=lambda r: {"train": r["train"]}), "reject", "missing_split"),
        ("empty test split", hf_edit(qrels=lambda r: {**r, "test": [{**r["test"][0], "score": 0}]}), "reject",
         "no_relevant"),
        ("judged query missing", hf_edit(qrels=lambda r: {**r, "test": r["test"] + [{**r["test"][0],
                                                                                   "query-id": "nope"}]}),
         "reject", "qrels_unknown_query"),
        ("query identical to its document", query_doc, "reject", "query_is_document"),
        ("truncated Arrow file", truncate_arrow, "reject", "unreadable_dataset"),
        ("state.json deleted", lambda t: (t / "corpus" / "state.json").unlink(), "reject", "unreadable_dataset"),
    ]


def hf_repo_cases() -> list[tuple]:
    return [
        ("malformed JSON line", raw_lines("corpus.jsonl", lambda ls: ls[:5] + ['{"_id": "x", "text": '] + ls[5:]),
         "reject", "unreadable_dataset"),
        ("README names a missing file", lambda t: (t / "qrels" / "test.jsonl").unlink(), "reject",
         "unreadable_dataset"),
        ("negative score", raw_lines("qrels/test.jsonl", lambda ls: [ls[0].replace('"score": 1', '"score": -1'),
                                                                     *ls[1:]]), "reject", "negative_score"),
        ("NUL in query", raw_lines("queries.jsonl", lambda ls: [ls[0].replace('"text": "', '"text": "\\u0000', 1),
                                                                *ls[1:]]), "reject", "control_character"),
    ]


def nq_cases() -> list[tuple]:
    def ctx(i: int, **values):
        return edit_record("", i, lambda r: {**r, "ctxs": [{**r["ctxs"][0], **values}, *r["ctxs"][1:]]})

    return [
        ("question missing", edit_record("", 0, without("question")), "reject", "missing_field"),
        ("question is a number", edit_record("", 1, with_fields(question=7)), "reject", "field_type"),
        ("blank question", edit_record("", 2, with_fields(question="   ")), "reject", "empty_field"),
        ("NUL in question", edit_record("", 3, lambda r: {**r, "question": r["question"] + "\x00"}), "reject",
         "control_character"),
        ("no passages", edit_record("", 4, with_fields(ctxs=[])), "reject", "missing_field"),
        ("gold passage text blank", ctx(5, text=""), "reject", "empty_field"),
        ("gold title not a string", ctx(6, title=["a", "b"]), "reject", "field_type"),
        ("10 MB passage", ctx(7, text=BIG), "reject", "text_too_long"),
        ("duplicate JSON key", edit_record("", 8, lambda r: json.dumps(r)[:-1] + ', "question": "other"}'), "reject",
         "duplicate_key"),
        ("truncated gzip", lambda t: t.write_bytes(t.read_bytes()[: len(t.read_bytes()) // 2]), "reject",
         "unreadable_file"),
        ("plain text named .gz", lambda t: t.write_bytes(gzip.decompress(t.read_bytes())), "reject",
         "unreadable_file"),
    ]


def codesearch_cases() -> list[tuple]:
    return [
        ("source root missing", replace_path("", "missing"), "reject", "missing_file"),
        ("source root is a file", replace_path("", "file"), "reject", "not_a_file"),
        ("source root without Python files", lambda t: [shutil.rmtree(t), t.mkdir(), (t / "notes.txt").write_text("x")],
         "reject", "empty_file"),
        ("only unparsable files", lambda t: [shutil.rmtree(t), t.mkdir(), (t / "a.py").write_bytes(b"def f(:\n"),
                                             (t / "b.py").write_bytes(b"\xff\xfe = 1\n")], "reject", "empty_file"),
        ("FIFO and symlink loop among the files", lambda t: [os.mkfifo(t / "pipe.py"),
                                                            os.symlink("loop.py", t / "loop.py")], "harmless", None),
    ]


def bad_input_tries(bases: dict[str, Base], work: Path) -> list[Try]:
    tables = {"beir": beir_cases(), "code": code_cases(), "hf": hf_cases(), "hf_repo": hf_repo_cases(),
              "nq": nq_cases(), "codesearch": codesearch_cases()}
    tries = []
    for base_name, cases in tables.items():
        base = bases[base_name]
        for case, mutate, expect, rule in cases:
            commands = ("validate", "build") if base.validate else ("build",)
            for command in commands:
                tries.append(Try("bad_input", base_name, case, command, expect, rule,
                                 run=make_input_run(base, mutate, command, expect, rule)))
    return tries


def make_input_run(base: Base, mutate, command: str, expect: str, rule: str | None) -> Callable[[Path], Outcome]:
    def run(folder: Path) -> Outcome:
        if base.name == "hf":  # HF edits rebuild the folder from the BEIR records of the same input
            shutil.copytree(base.path.parent / "beir", folder / "_beir")
        target = copy_input(base, folder)
        mutate(target)
        (folder / "params.yaml").write_text(params_text(base.source, target))
        if command == "validate":
            rc, _, err, secs = run_cli(["--params", "params.yaml", "validate", "--dataset", str(target), "--split",
                                        "test", "--report-dir", "reports"], folder)
            wanted = "harmless" if expect == "harmless_changed" else expect
            return classify(wanted, rule, rc, err, secs, output_same=None)
        rc, _, err, secs = run_cli(["--params", "params.yaml", "data", "build", "--out", "data", "--no-progress"],
                                   folder)
        same, flagged_ok = None, True
        if rc == 0:
            same = fingerprint(folder / "data") == base.fingerprint
            if expect == "warn":
                flagged_ok = dropped(folder / "data") > base.dropped
        if expect == "harmless_changed":  # e.g. tabs for spaces: a different but equally valid text
            return classify("harmless", None, rc, err, secs, output_same=None)
        return classify(expect, rule, rc, err, secs, output_same=same, flagged_ok=flagged_ok)
    return run


# ------------------------------------------------------------------------------------------ config


def config_tries(bases: dict[str, Base], work: Path) -> list[Try]:
    """Broken parameters, through ``searchr3 data build`` (exit 2 and a line naming the file are due)."""
    beir = bases["beir"]

    def good(target: Path) -> dict:
        return json.loads(params_text(beir.source, target))

    def yaml_dump(obj) -> str:
        import yaml

        return yaml.safe_dump(obj, sort_keys=False)

    cases = [
        ("unknown source type", lambda p: p["data"]["sources"][0].update(type="beer"), [], "params.yaml [data.sources[0]]"),
        ("unknown key", lambda p: p["data"].update(sead=1), [], "unknown key(s) ['sead']"),
        ("unknown option of a loader", lambda p: p["data"]["sources"][0].update(options={"spilt": "x"}), [],
         "bad options for load_beir"),
        ("number read as text", lambda p: p["data"]["sources"][0].update(weight="1e-1"), [], "[data.sources[0].weight]"),
        ("missing --params file", None, ["--params", "nowhere.yaml"], "nowhere.yaml: parameters file not found"),
        ("broken YAML", "data:\n  sources: [\n    {type: beir\n", [], "params.yaml:4:1: broken YAML"),
        ("unknown --profile", lambda p: p, ["--profile", "gpu-huge"], "unknown profile 'gpu-huge' (from --profile)"),
        ("unknown SEARCHR3_PROFILE", lambda p: p, [], "unknown profile 'nightly' (from the SEARCHR3_PROFILE"),
        ("params file is a folder", "DIR", [], "params.yaml: is not a regular file"),
    ]
    tries = []
    for case, change, extra, phrase in cases:
        def run(folder: Path, change=change, extra=extra, phrase=phrase, case=case) -> Outcome:
            target = copy_input(beir, folder)
            if change == "DIR":
                (folder / "params.yaml").mkdir()
            elif isinstance(change, str):
                (folder / "params.yaml").write_text(change)
            else:
                params = good(target)
                if change is not None:
                    change(params)
                (folder / "params.yaml").write_text(yaml_dump(params))
            env = {"SEARCHR3_PROFILE": "nightly"} if "SEARCHR3_PROFILE" in case else None
            args = (extra if extra and extra[0] == "--params" else ["--params", "params.yaml", *extra])
            rc, _, err, secs = run_cli([*args, "data", "build", "--out", "data", "--no-progress"], folder, env)
            outcome = classify("reject", phrase, rc, err, secs, output_same=None)
            if outcome.bucket == "rejected" and rc != 2:
                outcome.kind = f"refused_exit_{rc}"
            return outcome
        tries.append(Try("config", "params", case, "build", "reject", phrase, run=run))
    return tries


# ------------------------------------------------------------------------------------------ damaged artifacts

ARTIFACT_RULES = ("checksum_mismatch", "size_mismatch", "missing_file", "missing_manifest", "unsealed_artifact",
                  "unlisted_file", "vector_not_normalised", "snapshot-bad-labels", "unreadable_file",
                  "index_model_mismatch", "invalid-json", "manifest-missing-key", "snapshot-missing-file",
                  "snapshot-count-mismatch", "no_embed_token", "model_not_found")
ARTIFACT_DOCS = [("fruit", "Apples and pears are fruit that grow on trees."),
                 ("fox", "The quick brown fox jumps over the lazy dog."),
                 ("add", "def add(a, b): return a + b"),
                 ("solar", "Solar panels turn sunlight into electricity."),
                 ("rain", "Rain falls from clouds when droplets grow heavy."),
                 ("chess", "Chess is a board game for two players."),
                 ("bread", "Bread is baked from flour, water and yeast."),
                 ("moon", "The moon orbits the earth about once a month.")]


def _flip(path: Path, offset: int, n: int = 1) -> None:
    data = bytearray(path.read_bytes())
    offset = offset % len(data)
    for i in range(offset, min(len(data), offset + n)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2))


def _swap_ids(path: Path) -> None:
    ids = json.loads(path.read_text())
    ids[0], ids[1] = ids[1], ids[0]
    path.write_text(json.dumps(ids))  # same size: only the sha256 (or the results) tell


def _replace_text(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def artifact_cases(other: Path) -> list[tuple[str, Callable[[Path], None]]]:
    """(case, damage(folder)) where ``folder`` holds ``model/`` and ``index/``; ``other`` holds a second model and
    its index (another seed)."""
    m, i = "model", "index"

    def at(sub: str, name: str, fn, *args):
        return lambda f: fn(f / sub / name, *args)

    def big(f: Path, sub: str, name: str) -> int:
        return (f / sub / name).stat().st_size

    return [
        ("model.safetensors: 1 byte flipped", lambda f: _flip(f / m / "model.safetensors", big(f, m, "model.safetensors") // 2)),
        ("model.safetensors: 4 KB flipped", lambda f: _flip(f / m / "model.safetensors", big(f, m, "model.safetensors") // 3, 4096)),
        ("model.safetensors: header byte flipped", at(m, "model.safetensors", _flip, 20)),
        ("model.safetensors: truncated", at(m, "model.safetensors", _truncate)),
        ("model.safetensors: deleted", lambda f: (f / m / "model.safetensors").unlink()),
        ("model.safetensors: another model's", lambda f: shutil.copy(other / m / "model.safetensors", f / m / "model.safetensors")),
        ("model: an unsealed second weight shard", lambda f: shutil.copy(f / m / "model.safetensors", f / m / "extra.safetensors")),
        ("config.json: a value changed", at(m, "config.json", _edit_json, lambda c: c.update(rms_norm_eps=0.5))),
        ("config.json: broken JSON", at(m, "config.json", _truncate)),
        ("tokenizer.json: deleted", lambda f: (f / m / "tokenizer.json").unlink()),
        ("tokenizer.json: embed token renamed", at(m, "tokenizer.json", _replace_text, "<|embed_token|>", "<|embed_tokem|>")),
        ("model manifest.json: broken JSON", at(m, "manifest.json", _truncate)),
        ("model manifest.json: weights_sha256 edited", at(m, "manifest.json", _edit_json, lambda c: c.update(weights_sha256="0" * 64))),
        ("model manifest.json: per-file sha256 removed", at(m, "manifest.json", _edit_json, lambda c: c.pop("files"))),
        ("model folder: another model", lambda f: (shutil.rmtree(f / m), shutil.copytree(other / m, f / m))),
        ("index.faiss: 1 byte flipped in the vectors", lambda f: _flip(f / i / "index.faiss", big(f, i, "index.faiss") // 2)),
        ("index.faiss: a FAISS label flipped", lambda f: _flip(f / i / "index.faiss", big(f, i, "index.faiss") - 8 * 3)),
        ("index.faiss: exponent bits flipped", lambda f: _flip(f / i / "index.faiss", big(f, i, "index.faiss") // 3 | 3)),
        ("index.faiss: truncated", at(i, "index.faiss", _truncate)),
        ("index.faiss: deleted", lambda f: (f / i / "index.faiss").unlink()),
        ("index.faiss: another model's vectors", lambda f: shutil.copy(other / i / "index.faiss", f / i / "index.faiss")),
        ("doc_ids.json: two ids swapped", at(i, "doc_ids.json", _swap_ids)),
        ("doc_ids.json: broken JSON", at(i, "doc_ids.json", _truncate)),
        ("versions.npy: a byte flipped", lambda f: _flip(f / i / "versions.npy", big(f, i, "versions.npy") - 3)),
        ("versions.npy: truncated", at(i, "versions.npy", _truncate)),
        ("index manifest.json: broken JSON", at(i, "manifest.json", _truncate)),
        ("index manifest.json: model_checksum edited", at(i, "manifest.json", _edit_json, lambda c: c.update(model_checksum="0" * 64))),
        ("index manifest.json: count edited", at(i, "manifest.json", _edit_json, lambda c: c.update(count=c["count"] + 1))),
        ("index manifest.json: per-file sha256 removed", at(i, "manifest.json", _edit_json, lambda c: c.pop("files"))),
        ("index folder: another model's index", lambda f: (shutil.rmtree(f / i), shutil.copytree(other / i, f / i))),
    ]


def _build_artifacts(folder: Path, corpus: Path, seed_source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    rc, _, err, _ = run_cli(["model", "materialize", "--source", seed_source, "--out", str(folder / "model")], folder)
    if rc != 0:
        raise RuntimeError(f"materialize failed: {err[-500:]}")
    rc, _, err, _ = run_cli(["index", "build", "--corpus", str(corpus), "--model", str(folder / "model"),
                             "--out", str(folder / "index")], folder)
    if rc != 0:
        raise RuntimeError(f"index build failed: {err[-500:]}")


_shared: dict[str, object] = {}
_shared_lock = __import__("threading").Lock()


def shared(key: str, build: Callable[[], object]):
    """``build()`` once for all tries (the first try to ask builds it, the others wait)."""
    with _shared_lock:
        if key not in _shared:
            _shared[key] = build()
        return _shared[key]


def damaged_artifact_tries(bases: dict[str, Base], work: Path) -> list[Try]:
    """A tiny model and an index of 8 documents, each damaged one way, then ``searchr3 search`` (a refusal with
    exit 4 naming the file is due; the same top-5 as the clean pair would be a damage that did not matter,
    anything else a silent wrong answer). The clean pair is searched first in the same folder, so the fast
    path (the verified-hash cache) is warm when the damaged files are read."""
    root = work / "artifacts"
    query = ["search", "fruit that grows on trees", "-k", "5", "--index", "index", "--model", "model"]

    def build() -> str:
        from searchr3.model.tiny import build_tiny_raw

        corpus = root / "corpus"
        corpus.mkdir(parents=True)
        write_lines(corpus / "corpus.jsonl", [json.dumps({"_id": d, "title": "", "text": t}) for d, t in ARTIFACT_DOCS])
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
        build_tiny_raw(root / "raw-other", seed=7)
        _build_artifacts(root / "clean", corpus, "tiny-random")
        _build_artifacts(root / "other", corpus, str(root / "raw-other"))
        rc, out, err, _ = run_cli(query, root / "clean")
        if rc != 0:
            raise RuntimeError(f"search on the clean artifacts failed: {err[-500:]}")
        return out

    tries = []
    for case, damage in artifact_cases(root / "other"):
        def run(folder: Path, damage=damage) -> Outcome:
            clean_out = shared("artifacts", build)
            for sub in ("model", "index"):
                shutil.copytree(root / "clean" / sub, folder / sub)
            shutil.copy(root / "params.yaml", folder / "params.yaml")
            env = {"SEARCHR3_CACHE_DIR": str(folder / "cache")}
            rc0, _, err0, _ = run_cli(query, folder, env)  # warm the verified-hash cache on the clean copy
            if rc0 != 0:
                return Outcome("tracebacks", "benchmark_error", rc0, 0.0, f"clean copy failed: {err0[-200:]}")
            damage(folder)
            rc, out, err, secs = run_cli(query, folder, env)
            return classify("reject", None, rc, err, secs, output_same=(out == clean_out) if rc == 0 else None)
        tries.append(Try("damaged_artifact", "tiny", case, "search", "reject", None, run=run))
    return tries


# ------------------------------------------------------------------------------------------ kill -9 and concurrency

STAGE_OUTPUTS = {"data": ["data"],
                 "sft": ["models/sft", "checkpoints/sft", "metrics/sft.json", "dvclive/sft"],
                 "rl": ["models/rl", "indexes/rl", "checkpoints/rl", "metrics/rl.json", "dvclive/rl"],
                 "index": ["indexes/production"]}
PROJECT_STAGES = ("base_model", "data", "traces", "sft", "rl", "index")
ORPHAN_PATTERNS = (".*.building-*", ".*.old-*", ".*.tmp")


def stage_result(project: Path, stage: str) -> str:
    """What a stage produced, as one digest: the data fingerprint, or the sha256 of the model/index files."""
    if stage == "data":
        return fingerprint(project / "data")
    files = {"sft": ["models/sft/model.safetensors"],
             "rl": ["models/rl/model.safetensors", "indexes/rl/index.faiss", "indexes/rl/doc_ids.json"],
             "index": ["indexes/production/index.faiss", "indexes/production/doc_ids.json"]}[stage]
    h = hashlib.sha256()
    for f in files:
        h.update(hashlib.sha256((project / f).read_bytes()).digest())
    return h.hexdigest()


def orphans(project: Path) -> list[Path]:
    return sorted({p for pattern in ORPHAN_PATTERNS for p in project.rglob(pattern)
                   if ".prefect" not in p.parts and "cache" not in p.parts})


def tiny_project(work: Path) -> tuple[Path, dict, dict]:
    """The tiny profile run once, stage by stage (longer SFT and RL so that kills land mid-training): the project
    folder, each stage's reference result and wall seconds."""
    import yaml

    project = work / "project"
    project.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    tiny = params["profiles"]["tiny"]
    tiny["sft"] = {**tiny.get("sft", {}), "steps": 6, "checkpoint_every": 1}
    tiny["rl"] = {**tiny.get("rl", {}), "steps": 4, "checkpoint_every": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {}
    for stage in PROJECT_STAGES:
        rc, _, err, secs = run_cli(["stage", stage, "--no-progress"], project, {"SEARCHR3_CACHE_DIR": str(work / "cache")})
        if rc != 0:
            raise RuntimeError(f"tiny project: stage {stage} failed: {err[-800:]}")
        seconds[stage] = secs
    reference = {stage: stage_result(project, stage) for stage in STAGE_OUTPUTS}
    return project, reference, seconds


def project_copy(project: Path, folder: Path, stage: str) -> Path:
    """A copy of the finished project without ``stage``'s outputs (and checkpoints): the stage's input state."""
    target = folder / "project"
    drop = {str(project / o) for o in STAGE_OUTPUTS[stage]}
    shutil.copytree(project, target, ignore=lambda d, names: [n for n in names if os.path.join(d, n) in drop
                                                              or n.endswith(".lock")])
    return target


def start_stage(project: Path, stage: str, env_extra: dict) -> subprocess.Popen:
    env = {**os.environ, **OFFLINE, "PREFECT_HOME": str(project / ".prefect"), **env_extra}
    env.pop("SEARCHR3_DEBUG", None)
    env.pop("SEARCHR3_PROFILE", None)
    return subprocess.Popen(searchr3_command() + ["stage", stage, "--no-progress"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_tries(bases: dict[str, Base], work: Path, per_stage: int) -> list[Try]:
    """kill -9 of ``searchr3 stage NAME`` at a random moment (seeded), then the same command again: its result
    must equal the uninterrupted run's and no temporary file may be left ("rejected" here means: handled as due)."""
    import random
    import signal

    rng = random.Random(16)
    tries = []
    for stage in STAGE_OUTPUTS:
        for n in range(per_stage):
            share = rng.uniform(0.05, 0.95)  # of the uninterrupted run's wall time (process start included)

            def run(folder: Path, stage=stage, share=share) -> Outcome:
                project, reference, seconds = shared("project", lambda: tiny_project(work))
                delay = share * seconds[stage]
                copy = project_copy(project, folder, stage)
                env = {"SEARCHR3_CACHE_DIR": str(folder / "cache")}
                proc = start_stage(copy, stage, env)
                try:
                    proc.wait(timeout=delay)
                    killed = False
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
                left = len(orphans(copy))
                rc, _, err, secs = run_cli(["stage", stage, "--no-progress"], copy, env)
                if rc != 0:  # the rerun must finish: any refusal here is a failure to recover
                    lines = [ln for ln in err.splitlines() if ln.strip()]
                    return Outcome("tracebacks", "rerun_failed", rc, secs, (lines[-1] if lines else "")[:300])
                after = orphans(copy)
                note = f"{'killed' if killed else 'finished before the kill'} at {delay:.1f}s; {left} temp file(s) " \
                       f"after the kill, {len(after)} after the rerun"
                if stage_result(copy, stage) != reference[stage]:
                    return Outcome("silent_wrong", "resume_differs", rc, secs, note)
                if after:
                    return Outcome("accepted", "orphans_left", rc, secs, note + f": {after[0].name}")
                return Outcome("rejected", "resumed_identical" if killed else "not_killed", rc, secs, note)
            tries.append(Try("kill9", stage, f"kill {n + 1} at {share:.0%} of the run", "stage", "recover", None,
                             run=run))
    return tries


def concurrent_tries(bases: dict[str, Base], work: Path) -> list[Try]:
    """Two ``searchr3 stage NAME`` on the same project: the second, started once the first holds its lock, must
    stop at once with exit 5 and one line; the first must finish with the uninterrupted result."""
    tries = []
    for stage in STAGE_OUTPUTS:
        def run(folder: Path, stage=stage) -> Outcome:
            project, reference, _ = shared("project", lambda: tiny_project(work))
            copy = project_copy(project, folder, stage)
            env = {"SEARCHR3_CACHE_DIR": str(folder / "cache")}
            first = start_stage(copy, stage, env)
            lock = copy / Path(STAGE_OUTPUTS[stage][0]).parent / f".{Path(STAGE_OUTPUTS[stage][0]).name}.lock"
            deadline = time.time() + 120
            while time.time() < deadline and first.poll() is None:
                if lock.is_file() and f"pid {first.pid}:" in lock.read_text(errors="replace"):
                    break
                time.sleep(0.05)
            rc, _, err, secs = run_cli(["stage", stage, "--no-progress"], copy, env)
            first_err = first.communicate(timeout=TIMEOUT_S)[1]
            if first.returncode != 0:
                return Outcome("tracebacks", "first_run_failed", first.returncode, secs, first_err.strip()[-200:])
            if rc == 0:
                return Outcome("accepted", "no_overlap", rc, secs, "the first run ended before the second asked")
            outcome = judge_failure(rc, err, secs, None)
            if outcome.bucket == "rejected" and rc != 5:
                outcome.kind = f"refused_exit_{rc}"
            if stage_result(copy, stage) != reference[stage]:
                return Outcome("silent_wrong", "first_run_differs", rc, secs, outcome.line)
            if orphans(copy):
                return Outcome("accepted", "orphans_left", rc, secs, outcome.line)
            outcome.line = f"second run refused in {secs:.1f}s: {outcome.line}"
            return outcome
        tries.append(Try("concurrent", stage, "two runs at once", "stage", "reject", None, run=run))
    return tries


CATEGORIES: dict[str, Callable[[dict[str, Base], Path], list[Try]]] = {
    "bad_input": bad_input_tries,
    "config": config_tries,
    "damaged_artifact": damaged_artifact_tries,
    "kill9": lambda bases, work: kill_tries(bases, work, per_stage=KILLS_PER_STAGE[0]),
    "concurrent": concurrent_tries,
}
KILLS_PER_STAGE = [8]  # 8 per stage (32 in all); --quick: 3 (12)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small copies of SciFact and NQ-open (a few minutes)")
    p.add_argument("--category", action="append", choices=sorted(CATEGORIES), help="run only these (repeatable)")
    p.add_argument("--only", default=None, help="run only tries whose name contains this text")
    p.add_argument("--workers", type=int, default=2, help="tries run at once (default 2: this machine's cores)")
    p.add_argument("--json", default=None, help="also write every try and its outcome to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the work folder (printed) for inspection")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        KILLS_PER_STAGE[0] = 3
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="searchr3-reliability-"))
    try:
        bases = prepare_bases(work, args.quick)
        tries = [t for name in (args.category or sorted(CATEGORIES)) for t in CATEGORIES[name](bases, work)]
        if args.only:
            tries = [t for t in tries if args.only in t.name]
        used = {t.base for t in tries} | ({"beir"} if any(t.category == "config" for t in tries) else set())
        build_baselines({k: v for k, v in bases.items() if k in used}, work)
        print(f"{len(used & set(bases))} clean inputs built and validated in {time.perf_counter() - started:.0f} s "
              f"({'quick' if args.quick else 'full'} copies; {os.cpu_count()} CPU cores, {args.workers} tries at a time)",
              flush=True)

        def one(item: tuple[int, Try]) -> tuple[Try, Outcome]:
            i, t = item
            folder = work / "tries" / f"{i:03d}"
            folder.mkdir(parents=True)
            try:
                outcome = t.run(folder)
            except Exception as err:  # noqa: BLE001 - a bug of this benchmark, reported as such
                outcome = Outcome("tracebacks", "benchmark_error", None, 0.0, f"{type(err).__name__}: {err}"[:300])
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"  {outcome.bucket:<12} {outcome.kind:<18} rc={outcome.rc!s:<4} {outcome.seconds:5.1f}s  "
                  f"{t.name}: {outcome.line[:160]}", flush=True)
            return t, outcome

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(one, enumerate(tries)))
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    counts = Counter(o.bucket for _, o in results)
    kinds = Counter((o.bucket, o.kind) for _, o in results)
    print()
    print(f"by category and command ({len(results)} tries, {time.perf_counter() - started:.0f} s wall):")
    table = Counter((t.category, t.base, t.command, o.bucket) for t, o in results)
    groups = sorted({(t.category, t.base, t.command) for t, _ in results})
    print(f"  {'category/input':<22}{'command':<10}" + "".join(f"{b:>14}" for b in BUCKETS))
    for cat, base, command in groups:
        print(f"  {cat + '/' + base:<22}{command:<10}" + "".join(f"{table[(cat, base, command, b)]:>14}"
                                                                  for b in BUCKETS))
    print("outcome kinds: " + ", ".join(f"{b}/{k} {n}" for (b, k), n in sorted(kinds.items())))
    distinct = len({(t.category, t.base, t.case) for t, _ in results})
    harmless = [t.name for t, o in results if o.kind == "harmless"]
    undocumented = [t.name for t, o in results if o.bucket == "accepted" and o.kind != "harmless"]
    print(f"distinct corruptions: {distinct}; accepted {counts['accepted']} = {len(harmless)} documented harmless "
          f"variants (BOM, CRLF, ...) + {len(undocumented)} others" +
          (": " + "; ".join(undocumented) if undocumented else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([{**{k: v for k, v in asdict(t).items() if k != "run"},
                                                **asdict(o)} for t, o in results], indent=1) + "\n")
    print(f"reliability: tried {len(results)} rejected {counts['rejected']} tracebacks {counts['tracebacks']} "
          f"accepted {counts['accepted']} silent_wrong {counts['silent_wrong']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
