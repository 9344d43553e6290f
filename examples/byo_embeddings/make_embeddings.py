"""Write .npz embeddings as any other model or vendor API would give them.

    python examples/byo_embeddings/make_embeddings.py OUT_DIR

Items have a latent class structure; the "old" model sees it through a narrow, noisy random
projection (64-d), the "new" model through a wider, cleaner nonlinear one (96-d). Each file
holds `embeddings`, `labels` and `ids`, the only keys compatctl needs. The train files are the
pairs to fit a transform on; the test files are the gallery and queries.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out: Path, classes: int = 50, per_class: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    latent_dim = 48
    centers = rng.normal(size=(classes, latent_dim))
    old_map = rng.normal(size=(latent_dim, 64)) / np.sqrt(latent_dim)
    new_map = rng.normal(size=(latent_dim, 96)) / np.sqrt(latent_dim)
    next_id = 1_000_000  # ids need not start at 0; they only have to be unique per item
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(classes), per_class)
        latent = centers[labels] + 0.9 * rng.normal(size=(len(labels), latent_dim))
        ids = np.arange(next_id, next_id + len(labels))
        next_id += len(labels)
        old = latent @ old_map + 1.2 * rng.normal(size=(len(labels), 64))
        new = np.tanh(latent @ new_map) + 0.1 * rng.normal(size=(len(labels), 96))
        np.savez(out / f"old_{split}.npz", embeddings=old.astype(np.float32), labels=labels, ids=ids)
        np.savez(out / f"new_{split}.npz", embeddings=new.astype(np.float32), labels=labels, ids=ids)
    print(f"wrote old/new train/test .npz files to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "byo"))
