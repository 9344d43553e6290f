"""Relevance judgments (qrels) for a query set against a separate corpus (gallery) set.

Two layouts are read:

- BEIR: a TSV with a header line ``query-id<TAB>corpus-id<TAB>score`` (graded integer scores);
- TREC: whitespace-separated ``qid 0 docid rel`` lines, no header.

A judged pair with a grade > 0 is relevant with gain = the grade (trec_eval's convention: linear
gains for nDCG; grades <= 0 are judged non-relevant). Ids are the embedding sets' ids: text, or
whole numbers when the sets hold integer ids. Every id the file names must be in the sets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import IdIndex


@dataclasses.dataclass
class Qrels:
    """Judgments read from ``path``: one entry per (query id, corpus id) pair, ids as text."""

    path: Path
    layout: str
    query_ids: np.ndarray
    corpus_ids: np.ndarray
    grades: np.ndarray

    def describe(self) -> str:
        relevant = int(np.count_nonzero(self.grades > 0))
        return (f"qrels {self.path} ({self.layout}, {len(self.grades)} judgments, {relevant} relevant with "
                "grade > 0, gain = grade); no row is left out: query and corpus ids are separate name spaces")

    def relevance(self, query, gallery):
        """The retrieval Relevance function for these sources (their ids coded as evaluate sees them)."""
        from compatctl.evaluate.sources import code_values

        relevant = self.grades > 0
        query_ids = _as_set_ids(self.query_ids, query, self.path, "query")
        corpus_ids = _as_set_ids(self.corpus_ids, gallery, self.path, "corpus")
        _require_present(query_ids, query, self.path, "query")
        _require_present(corpus_ids, gallery, self.path, "corpus")
        query_codes = code_values(query, "ids", query_ids[relevant])[0]
        corpus_codes = code_values(gallery, "ids", corpus_ids[relevant])[0]
        gains = self.grades[relevant].astype(np.float64)
        cache: dict = {}

        def relevance(queries, segment):
            if cache.get("queries") is not queries:  # once per query block
                rows, found = IdIndex(queries.ids).locate(query_codes)
                cache.update(queries=queries, rows=rows[found], docs=corpus_codes[found], gains=gains[found])
            cols, here = IdIndex(segment.gallery.ids).locate(cache["docs"])
            return cache["rows"][here], cols[here], cache["gains"][here]

        return relevance


def read_qrels(path: Path) -> Qrels:
    """Read a BEIR TSV (with header) or TREC qrels file.

    Raises:
        BadInputError: missing file, a line that fits neither layout, a grade that is not a whole
            number, a (query, corpus) pair judged twice, or no judgments at all.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInputError(f"--qrels {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--qrels {path}: cannot be read as UTF-8 text ({exc})") from None
    layout, rows = _parse_lines(path, lines)
    if not rows:
        raise BadInputError(f"--qrels {path}: holds no judgments; expected BEIR 'query-id<TAB>corpus-id<TAB>score' "
                            "lines after the header, or TREC 'qid 0 docid rel' lines")
    query_ids, corpus_ids, grades = (np.array(column) for column in zip(*rows))
    pairs = np.char.add(np.char.add(query_ids, "\t"), corpus_ids)  # no id holds a tab
    unique, counts = np.unique(pairs, return_counts=True)
    if (counts > 1).any():
        first = unique[counts > 1][0].split("\t")
        raise BadInputError(f"--qrels {path}: {int((counts > 1).sum())} (query, corpus) pairs are judged more "
                            f"than once, e.g. {first[0]!r} / {first[1]!r}; keep one grade per pair")
    return Qrels(path, layout, query_ids, corpus_ids, grades.astype(np.int64))


def _parse_lines(path: Path, lines: list[str]) -> tuple[str, list[tuple[str, str, int]]]:
    first = next((line for line in lines if line.strip()), "")
    beir = len(first.split("\t")) == 3 or first.split()[:1] == ["query-id"]
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t") if beir else line.split()
        if beir and number == 1 and fields[0].strip() == "query-id":
            continue  # the header
        if len(fields) != (3 if beir else 4):
            raise BadInputError(f"--qrels {path}: line {number} has {len(fields)} fields; BEIR files have "
                                "'query-id<TAB>corpus-id<TAB>score' (with that header), TREC files 'qid 0 docid rel'")
        query_id, corpus_id, grade = (fields[0], fields[1], fields[2]) if beir else (fields[0], fields[2], fields[3])
        try:
            rows.append((query_id.strip(), corpus_id.strip(), int(grade)))
        except ValueError:
            raise BadInputError(f"--qrels {path}: line {number}: grade {grade!r} is not a whole number") from None
    return ("BEIR TSV" if beir else "TREC"), rows


def _as_set_ids(ids: np.ndarray, source, path: Path, role: str) -> np.ndarray:
    """Qrels ids (text) as the set stores them: text, or int64 for a set with integer ids."""
    if getattr(source, "id_type", None) == "utf8":
        return ids
    try:
        return ids.astype(np.int64)
    except (ValueError, OverflowError):
        bad = next(i for i in ids if not i.lstrip("-").isdigit())
        raise BadInputError(f"--qrels {path}: {role} id {bad!r} is text, but the {role} set has integer ids; "
                            "use the sets' ids in the qrels file") from None


def _require_present(ids: np.ndarray, source, path: Path, role: str) -> None:
    from compatctl.evaluate.sources import column_values, source_name

    stored = column_values(getattr(source, "_source", source), "ids")
    missing = np.unique(ids[~np.isin(ids, stored)])
    if len(missing):
        raise BadInputError(f"--qrels {path}: names {len(missing)} {role} ids absent from {source_name(source)} "
                            f"(first: {', '.join(map(str, missing[:5].tolist()))}); the qrels must use the ids "
                            "of the embedding sets")
