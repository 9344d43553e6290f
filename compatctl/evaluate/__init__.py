"""Retrieval evaluation: exact streamed top-k / mAP, backfill curves, compatibility matrices, gates.

Library API (keyword-only options; sources are ``compatctl.store.open_embeddings`` objects or
EmbeddingBlocks): ``evaluate``, ``evaluate_records`` (with per-query outcomes), ``compare`` (baseline,
ceiling, gap closed, flips, intervals), ``read_qrels``, ``backfill_curve``, ``compatibility_matrix``,
``parse_gates``, ``check_gates``. No torch on this path: numpy only.
"""

from compatctl.evaluate.compare import compare
from compatctl.evaluate.curve import backfill_curve
from compatctl.evaluate.gates import check_gates, failed_gates, gate_names, parse_gates
from compatctl.evaluate.matrix import compatibility_matrix, load_plan, parse_sets
from compatctl.evaluate.qrels import read_qrels
from compatctl.evaluate.retrieval import evaluate, evaluate_records
from compatctl.evaluate.sources import DISTANCES, TIE_RULE

__all__ = ["DISTANCES", "TIE_RULE", "backfill_curve", "check_gates", "compare", "compatibility_matrix", "evaluate",
           "evaluate_records", "failed_gates", "gate_names", "load_plan", "parse_gates", "parse_sets", "read_qrels"]
