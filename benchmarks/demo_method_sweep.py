"""Compatibility of BCT / BT² settings on the demo's built-in data (how the demo's settings were chosen).

    python benchmarks/demo_method_sweep.py runs/sweep

Trains the demo's old model (first half of the classes, seed 0) and an independent new model
(seed 1) once, then each variant below against them, and prints top-1 new/new and new/old
next to old/old. Models already in the folder are reused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DATA = "builtin:classes=10,train=4000,test=1000,size=16"
BASE = [f"data={DATA}", "arch=tiny_cnn", "embedding_dim=32", "epochs=10", "lr=0.05", "warmup_epochs=1"]
VARIANTS = {
    "bct paper (raw logits)": ("bct", []),
    "bct cosine 8, all, w3": ("bct", ["bct.classifier_scale=8", "bct.synthesize=all", "bct.weight=3"]),
    "bt2 weights 1/1, cos 16": ("bt2", ["bt2.align_weight=1", "bt2.old_classifier_weight=1"]),
    "bt2 weights 1/3, cos 8": ("bt2", ["bt2.align_weight=1", "bt2.old_classifier_weight=3", "bt2.classifier_scale=8"]),
    "bt2 weights 1/3, cos 4": ("bt2", ["bt2.align_weight=1", "bt2.old_classifier_weight=3", "bt2.classifier_scale=4"]),
}


def model(root: Path, name: str, overrides: list[str], old: Path | None = None):
    from compatctl.models.embed import embed_dataset
    from compatctl.store import open_embeddings
    from compatctl.train.config import load_train_config
    from compatctl.train.trainer import train_model

    out, emb = root / name, root / f"{name}-emb"
    if not (out / "model.safetensors").exists():
        started = time.perf_counter()
        train_model(load_train_config(None, BASE + overrides), out_dir=out, old_model=old)
        print(f"  trained {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not (emb / "manifest.json").exists():
        embed_dataset(out / "model.safetensors", DATA, emb, split="test")
    return out / "model.safetensors", open_embeddings(emb)


def main(root: Path) -> None:
    from compatctl.evaluate import evaluate

    top1 = lambda query, gallery: evaluate(query, gallery)["metrics"]["top1"]  # noqa: E731
    old, old_emb = model(root, "old", ["method=independent", "seed=0", "classes=first_half"])
    teacher, new_emb = model(root, "independent", ["method=independent", "seed=1", "classes=all"])
    print(f"{'case':<28} {'new/new':>8} {'new/old':>8}")
    print(f"{'old/old':<28} {top1(old_emb, old_emb):8.3f}")
    print(f"{'independent':<28} {top1(new_emb, new_emb):8.3f} {top1(new_emb, old_emb):8.3f}")
    for index, (label, (method, overrides)) in enumerate(VARIANTS.items()):
        extra = [f"bt2.teacher={teacher}", "bt2.extra_dims=8"] if method == "bt2" else []
        _, emb = model(root, f"variant{index}", [f"method={method}", "seed=1", "classes=all", *extra, *overrides], old)
        print(f"{label:<28} {top1(emb, emb):8.3f} {top1(emb, old_emb):8.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo-sweep"))
