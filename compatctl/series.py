"""A series of updates v1 → v2 → v3: what each model in the chain is compatible with.

A model's lineage (metadata ``lineage``) holds:

- ``ancestors``: every earlier model's fingerprint, newest first (the --old model, then its
  --old, ...), whatever the method;
- ``compatible_with``: the ancestors this model claims compatibility with, newest first, each
  ``{"fingerprint", "dims", "method"}``: compare this model's first ``dims`` dims with that
  model's embeddings. A compatible method (l2, bct, bt2) trained with ``--old V2`` is
  compatible with V2 (all of V2's dims) and with everything V2 is compatible with, at the same
  dims (the claim is transitive: BCT keeps V3 in V2's space, which is in V1's; BT² keeps V2's
  dims as V3's first dims, and V2's first d1 dims are V1's space). An independent or
  contrastive model trained with --old is compatible with nothing.

A claim is the method's intent; whether it holds is measured by each model's self-check
(extra.self_check, new/old against the direct --old) and by ``compatctl eval --set`` over the
whole series. ``--require-compatible`` refuses an --old whose own chain is broken (an ancestor
it does not claim, or a failed self-check) before any training.

BT² along a series: the new model aligns its first d_old dims with V2 (as in one step) and,
with ``bt2.keep_ancestor_prefixes`` (default), also the first ``dims`` of every earlier
compatible ancestor with V2's same first dims (alignment and class-mean terms at the same
weights), so that V1's prefix does not drift step by step.

No torch here: ``inspect`` and ``eval`` read these facts from headers.
"""

from __future__ import annotations

COMPATIBLE_METHODS = ("l2", "bct", "bt2")


def short(fingerprint: str | None) -> str:
    return (fingerprint or "unknown")[:12]


def compatible_entries(header: dict) -> list[dict]:
    """The ``compatible_with`` entries of a model (or embedding-set) header, newest first.

    Models written before series support have no such list: a compatible method's direct old
    model is inferred (dims: ``extra.compatible_dims`` or the model's width); nothing beyond it.
    """
    lineage = header.get("lineage") if isinstance(header.get("lineage"), dict) else {}
    entries = lineage.get("compatible_with")
    if isinstance(entries, list):
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("fingerprint"), str)
                and isinstance(e.get("dims"), int)]
    if lineage.get("method") in COMPATIBLE_METHODS and lineage.get("old_model"):
        dims = (header.get("extra") or {}).get("compatible_dims") or header.get("compatible_dims") \
            or header.get("embedding_width")
        if isinstance(dims, int):
            return [{"fingerprint": lineage["old_model"], "dims": dims, "method": lineage.get("method")}]
    return []


def lineage_for(method: str, old_header: dict | None, old_width: int | None) -> dict:
    """The lineage of a model trained by ``method`` with ``--old`` (its header and width), or none."""
    if old_header is None:
        return {"method": method, "old_model": None, "ancestors": [], "compatible_with": []}
    old_fingerprint = old_header.get("fingerprint")
    earlier = (old_header.get("lineage") or {}).get("ancestors", [])
    compatible = []
    if method in COMPATIBLE_METHODS:
        compatible = [{"fingerprint": old_fingerprint, "dims": int(old_width), "method": method}]
        compatible += [dict(e) for e in compatible_entries(old_header)]
    return {"method": method, "old_model": old_fingerprint, "ancestors": [old_fingerprint, *earlier],
            "compatible_with": compatible}


def ancestor_prefixes(old_header: dict, old_width: int) -> list[int]:
    """Widths of the old model's compatible prefixes narrower than the old model (BT² keeps them)."""
    return sorted({e["dims"] for e in compatible_entries(old_header) if 0 < e["dims"] < old_width})


def chain_problem(old_header: dict, old_path) -> str | None:
    """Why ``--old`` is not compatible with its own ancestors (for --require-compatible), or None."""
    lineage = old_header.get("lineage") if isinstance(old_header.get("lineage"), dict) else {}
    ancestors = [a for a in lineage.get("ancestors") or [] if isinstance(a, str)]
    claimed = {e["fingerprint"] for e in compatible_entries(old_header)}
    unclaimed = [a for a in ancestors if a not in claimed]
    if unclaimed:
        return (f"--old {old_path}: is not compatible with its ancestor {short(unclaimed[0])} (it was trained with "
                f"method {lineage.get('method')!r}, which claims compatibility with "
                f"{', '.join(short(c) for c in claimed) or 'no ancestor'}); --require-compatible keeps the whole "
                "series compatible: pass an --old trained with l2, bct or bt2 along the chain, or drop "
                "--require-compatible")
    check = (old_header.get("extra") or {}).get("self_check") or {}
    if ancestors and check.get("compatible") is False:
        return (f"--old {old_path}: failed its own self-check against {short(ancestors[0])} (new/old top-1 "
                f"{check['new_old']['top1']:.3f} <= old/old {check['old_old']['top1']:.3f}); --require-compatible "
                "keeps the whole series compatible: retrain that model, or drop --require-compatible")
    return None


def chain_lines(header: dict) -> list[str]:
    """The series a model belongs to, oldest first, one line per model (what ``inspect`` shows)."""
    lineage = header.get("lineage") if isinstance(header.get("lineage"), dict) else {}
    ancestors = [a for a in lineage.get("ancestors") or [] if isinstance(a, str)]
    if not ancestors:
        return []
    claims = {e["fingerprint"]: e for e in compatible_entries(header)}
    lines = []
    for depth, fingerprint in enumerate(reversed(ancestors)):
        entry = claims.get(fingerprint)
        note = f"compatible: first {entry['dims']} dims" if entry else "not compatible"
        lines.append(f"v{depth + 1} {short(fingerprint)} ({note})")
    lines.append(f"v{len(ancestors) + 1} {short(header.get('fingerprint'))} (this model, {lineage.get('method')})")
    return lines
