"""The rules input data must follow: one definition for the loaders and the validator.

The loaders (``load_beir``, ``load_hf``, ``load_nq_open``, and so ``searchr3 data build``) apply
them and stop at the first broken row with a :class:`~searchr3.errors.DataError` naming file, line
and rule; ``searchr3 validate`` computes the same checks for every row (one boolean column per
rule, :mod:`searchr3.validate.frames`) and its Great Expectations suites, built from the rule lists
below, report every offending row. So a file the validator passes loads, and a file a loader
refuses fails validation under the same rule name.

Each rule has a stable name (the ``rule`` of a ``DataError``, the ``meta.rule`` of an expectation);
``docs/errors.md`` documents them all. Size bounds come from :class:`Limits` (the ``validate:``
section of params.yaml sets them, for the validator and the data stage alike).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# C0 control characters other than tab, newline, form feed and carriage return, and DEL.
# (C1 characters U+0080-U+009F are allowed: real corpora such as SciFact hold them as mojibake.)
CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Rule:
    name: str
    scope: str  # file | record | table | judgement | split
    description: str
    severity: str = "error"  # error: refused; warning: reported (and handled as the description says)


RULES: dict[str, Rule] = {r.name: r for r in [
    # reading a file (raised by the readers, for loaders and validator alike)
    Rule("missing_file", "file", "the file or folder exists"),
    Rule("not_a_file", "file", "the path is a regular file (not a folder, FIFO, device or symlink loop)"),
    Rule("unreadable_file", "file", "the file can be opened and read (permissions, I/O)"),
    Rule("empty_file", "file", "the file holds at least one record"),
    Rule("non_utf8", "file", "the file is UTF-8 text"),
    Rule("malformed_json", "file", "every non-blank line is one JSON object"),
    Rule("duplicate_key", "file", "no JSON object names the same key twice"),
    Rule("qrels_columns", "file", "every qrels line has 3 tab-separated columns: query-id, corpus-id, score"),
    Rule("unreadable_dataset", "file", "a Hugging Face dataset folder loads with `datasets`"),
    Rule("missing_column", "file", "a Hugging Face dataset has the id, text and score columns"),
    Rule("missing_split", "file", "the requested split exists"),
    Rule("ambiguous_split", "file", "a dataset part that must have one split has exactly one"),
    # one corpus or queries record
    Rule("missing_field", "record", "`_id` and `text` are present and not null"),
    Rule("field_type", "record", "`_id`, `title` and `text` are strings (`_id` may be an integer)"),
    Rule("empty_field", "record", "`_id` and `text` hold a non-blank character (a title does not replace a text)"),
    Rule("control_character", "record", "no NUL or other control character (U+0000-U+001F except tab, newline, "
                                        "form feed, carriage return; U+007F)"),
    Rule("invalid_unicode", "record", "no lone surrogate (a \\ud800-\\udfff escape that is not a pair)"),
    Rule("text_too_short", "record", "text length >= validate.min_text_chars"),
    Rule("text_too_long", "record", "text length <= validate.max_doc_chars (documents, title included) "
                                    "or validate.max_query_chars (queries)"),
    # a whole corpus or queries file
    Rule("duplicate_id", "table", "every `_id` occurs once in its file"),
    # one judgement
    Rule("qrels_score", "judgement", "the score is an integer"),
    Rule("negative_score", "judgement", "the score is >= 0 (0: judged not relevant)"),
    Rule("qrels_unknown_query", "judgement", "the judged query is in the queries"),
    Rule("qrels_unknown_doc", "judgement", "the judged document is in the corpus"),
    Rule("duplicate_judgement", "judgement", "no (query, document) pair is judged twice"),
    Rule("query_is_document", "judgement", "a query is not the very text of a document judged relevant to it"),
    # a split as a whole
    Rule("no_relevant", "split", "the split judges at least one document relevant (score >= 1)"),
    Rule("shared_query", "split", "no query (same id or same text) is judged both in this split and in another "
                                  "split; `data build` drops such queries from training", severity="warning"),
    Rule("no_training_rows", "split", "the data stage's training splits leave at least one training row"),
]}

RECORD_RULES = ("missing_field", "field_type", "empty_field", "control_character", "invalid_unicode",
                "text_too_short", "text_too_long")
JUDGEMENT_RULES = ("qrels_score", "negative_score", "qrels_unknown_query", "qrels_unknown_doc", "query_is_document")

Problem = tuple[str, str]  # (rule, detail)


@dataclass(frozen=True)
class Limits:
    """Size bounds on texts (characters). Defaults match ``validate:`` in params.yaml."""

    min_text_chars: int = 1
    max_doc_chars: int = 20000
    max_query_chars: int = 2000

    @classmethod
    def of(cls, config) -> Limits:
        """The limits of a ``ValidateConfig`` (or anything with the same three fields)."""
        return cls(config.min_text_chars, config.max_doc_chars, config.max_query_chars)

    def max_chars(self, kind: str) -> int:
        return self.max_doc_chars if kind == "corpus" else self.max_query_chars


def join_title(title: str | None, text: str) -> str:
    """Document text as every loader builds it: ``title + "\\n" + text`` when the title is non-empty."""
    title = (title or "").strip()
    return f"{title}\n{text}" if title else text


def text_key(text: str) -> str:
    """The form in which two texts count as the same (whitespace collapsed, lower-cased)."""
    return " ".join(text.split()).lower()


def string_problem(value: str, key: str) -> Problem | None:
    """Control characters or lone surrogates in a string field."""
    match = CONTROL.search(value)
    if match:
        return "control_character", f"{key!r} holds U+{ord(match.group()):04X} at character {match.start() + 1}"
    match = SURROGATE.search(value)
    if match:
        return "invalid_unicode", f"{key!r} holds a lone surrogate U+{ord(match.group()):04X} at character " \
                                  f"{match.start() + 1}"
    return None


def record_id(record: dict) -> str | None:
    """``_id`` as a string (integers are accepted: some BEIR exports store numeric ids); None if unusable."""
    value = record.get("_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


def record_text(record: dict, kind: str) -> str:
    """The text a record contributes (title joined for documents); ``""`` when the fields are unusable."""
    text = record.get("text")
    if not isinstance(text, str):
        return ""
    title = record.get("title")
    return join_title(title, text) if kind == "corpus" and isinstance(title, str) else text


def _field_problem(value, key: str, required: bool, allow_int: bool = False) -> Problem | None:
    if value is None:
        return ("missing_field", f"no {key!r}") if required else None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, str):
        return "field_type", f"{key!r} must be a string, got {type(value).__name__}"
    if required and not value.strip():
        return "empty_field", f"{key!r} is blank"
    return string_problem(value, key)


def record_problems(record: dict, kind: str, limits: Limits, names: dict[str, str] | None = None) -> list[Problem]:
    """Every rule of :data:`RECORD_RULES` a corpus (``kind="corpus"``) or queries record breaks.

    ``names``: what the input calls the fields (``{"text": "question"}``), for the details.
    """
    names = names or {}
    problems = [p for p in (_field_problem(record.get("_id"), names.get("_id", "_id"), True, allow_int=True),
                            _field_problem(record.get("text"), names.get("text", "text"), True)) if p]
    if kind == "corpus":
        title = _field_problem(record.get("title"), names.get("title", "title"), False)
        if title:
            problems.append(title)
    if not problems:
        size, bound = len(record_text(record, kind)), limits.max_chars(kind)
        if size < limits.min_text_chars:
            problems.append(("text_too_short", f"{size} characters, fewer than {limits.min_text_chars}"))
        elif size > bound:
            problems.append(("text_too_long", f"{size} characters, more than {bound}"
                                              f" (validate.max_{'doc' if kind == 'corpus' else 'query'}_chars)"))
    return problems


def parse_score(raw) -> tuple[int | None, Problem | None]:
    """A relevance score as written (TSV text or a dataset value) -> ``(int, None)`` or ``(None, problem)``."""
    value = raw
    if isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            return None, ("qrels_score", f"score {raw!r} is not an integer")
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, ("qrels_score", f"score {raw!r} is not an integer")
    if value < 0:
        return value, ("negative_score", f"score {value} is negative (0 means judged not relevant)")
    return value, None


def same_text(query: str, document: str) -> bool:
    """Whether a query is the text of a document (with or without the document's first line, its title)."""
    key = text_key(query)
    if not key:
        return False
    return key == text_key(document) or ("\n" in document and key == text_key(document.split("\n", 1)[1]))
