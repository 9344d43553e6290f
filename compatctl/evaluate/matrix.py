"""`compatibility_matrix`: every query-model × gallery-model pair of named embedding sets.

The sets hold the same items (matched by id, so leave-one-out works across models) embedded
by different models, e.g. ``old``, ``new`` and ``bt2``. Each set serves as the query side and
as the gallery side. A cross pair (A queries, B gallery) is marked *compatible* on a metric when
M(A, B) > M(ref, ref), ref being the reference ("old") set: the empirical criterion of BCT
(Shen et al. 2020) — using the pair must beat not updating at all.

A plan file (YAML) names the sets and, optionally, the reference::

    # compatctl eval --plan plan.yaml
    reference: old
    sets:
      old: runs/old/test_emb
      new: runs/new/test_emb
"""

from __future__ import annotations

import time
from pathlib import Path

from compatctl.errors import BadInputError, ConfigError
from compatctl.evaluate.retrieval import evaluate
from compatctl.evaluate.sources import describe_source

CRITERION = "compatible on a metric: M(query set, gallery set) > M(reference, reference)"
CRITERION_METRICS = ("top1", "map")


def parse_sets(specs: list[str]) -> dict[str, str]:
    """``["old=DIR", "new=DIR"]`` -> {"old": "DIR", "new": "DIR"} (order kept)."""
    sets: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BadInputError(f"--set {spec!r}: expected NAME=PATH, e.g. old=runs/old/test_emb")
        if name.strip() in sets:
            raise BadInputError(f"--set {spec!r}: the name {name.strip()!r} is given twice; names must differ")
        sets[name.strip()] = path.strip()
    return sets


def load_plan(path: Path) -> tuple[dict[str, str], str | None]:
    """(sets, reference) of a YAML plan; relative set paths are relative to the plan file."""
    from compatctl.config import read_yaml  # here: yaml only for --plan, not on every eval's start-up

    data = read_yaml(Path(path))
    problems = [f"unknown key {key!r}; valid keys: reference, sets" for key in data if key not in ("reference", "sets")]
    sets = data.get("sets")
    if not isinstance(sets, dict) or not sets or not all(isinstance(v, str) for v in sets.values()):
        problems.append("'sets' must be a non-empty mapping of NAME: PATH")
        sets = {}
    reference = data.get("reference")
    if reference is not None and reference not in sets:
        problems.append(f"'reference' {reference!r} is not one of the sets ({', '.join(map(str, sets))})")
    if problems:
        raise ConfigError(problems, str(path))
    base = Path(path).parent
    return {str(name): str(base / value) for name, value in sets.items()}, reference


def compatibility_matrix(named_sources: dict, *, reference: str | None = None, progress=None,
                         **evaluate_options) -> dict:
    """Evaluate every (query set, gallery set) pair; mark cross pairs against the reference.

    Args:
        named_sources: name -> opened embedding source, in display order (at least two).
        reference: the "old" set (default: the first).
        progress: optional callable (description, done, total), called per pair.
        evaluate_options: keyword options of ``evaluate`` (distance, topk, dims, ...).
    Returns:
        {"matrix": {"sets", "reference", "criterion", "pairs": [...]}, "inputs", "distance", "elapsed_s"}.
    """
    started = time.perf_counter()
    names = list(named_sources)
    if len(names) < 2:
        raise BadInputError("a compatibility matrix needs at least two --set NAME=PATH")
    reference = reference or names[0]
    if reference not in named_sources:
        raise BadInputError(f"reference {reference!r} is not one of the sets ({', '.join(names)})")
    pairs = []
    for index, (query_name, gallery_name) in enumerate((q, g) for q in names for g in names):
        report = evaluate(named_sources[query_name], named_sources[gallery_name], **evaluate_options)
        pairs.append({"query": query_name, "gallery": gallery_name, "metrics": report["metrics"],
                      "dims": report["dims"], "counts": report["counts"]})
        if progress is not None:
            progress("pairs", index + 1, len(names) ** 2)
    _mark(pairs, reference)
    return {"matrix": {"sets": names, "reference": reference, "criterion": CRITERION, "pairs": pairs},
            "inputs": {name: describe_source(source) for name, source in named_sources.items()},
            "distance": evaluate_options.get("distance", "cosine"),
            "elapsed_s": round(time.perf_counter() - started, 4)}


def _mark(pairs: list[dict], reference: str) -> None:
    baseline = next(p["metrics"] for p in pairs if p["query"] == p["gallery"] == reference)
    for pair in pairs:
        cross = pair["query"] != pair["gallery"]
        pair["compatible"] = {name: pair["metrics"][name] > baseline[name] for name in CRITERION_METRICS
                              if name in baseline} if cross else None
