"""Training speed on this machine's CPU: images/s per shipped architecture and the share of an
epoch spent outside forward/backward (batch gathering, augmentation, normalization, logging).

    python benchmarks/train_speed.py [--threads 2] [--images 1024] [--archs tiny_cnn resnet20 ...]

Runs one `train-new` epoch per architecture (and per method for tiny_cnn) on generated 32x32
images through compatctl.train.train_model and reads its metrics.jsonl. Timings are noisy on a
shared machine: run it alone for figures you quote.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from compatctl.train import load_train_config, train_model


def one_epoch(arch: str, method: str, images: int, old: Path | None, out: Path) -> dict:
    overrides = [f"data=builtin:classes=10,train={images},test=10,size=32", f"arch={arch}", "epochs=1",
                 "batch_size=128", f"method={method}", "device=cpu", "embedding_dim=128"]
    if method == "contrastive":
        overrides.append("embedding_dim=32")
    start = time.perf_counter()
    train_model(load_train_config(None, overrides), out_dir=out, old_model=old)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    metrics["wall"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--archs", nargs="+", default=["tiny_cnn", "resnet20", "resnet56", "resnet18"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.images} images of 32x32, batch 128, CPU")
    print(f"{'arch':<10}{'method':<13}{'images/s':>10}{'data share':>12}{'epoch s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        old = None
        for arch in args.archs:
            methods = ["independent", "bct", "bt2", "contrastive"] if arch == "tiny_cnn" else ["independent"]
            for method in methods:
                out = Path(tmp) / f"{arch}-{method}"
                metrics = one_epoch(arch, method, args.images, old if method in ("bct", "bt2") else None, out)
                if arch == "tiny_cnn" and method == "independent":
                    old = out / "model.safetensors"
                print(f"{arch:<10}{method:<13}{metrics['images_per_s']:>10.0f}{metrics['data_share']:>12.1%}"
                      f"{metrics['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
