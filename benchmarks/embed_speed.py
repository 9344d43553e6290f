"""Embed throughput vs the bare forward pass of the same model on the same batches.

`compatctl embed` adds to the forward pass: uint8 -> float conversion and normalization,
copies into the output, safetensors shard writes with sha256, progress files and the
manifest. This script measures that overhead (target: under 10 %) per architecture:

    python benchmarks/embed_speed.py                       # tiny_cnn and resnet20 on builtin data
    python benchmarks/embed_speed.py --archs resnet20 --rows 2000 --threads 2 --repeats 3

``forward`` = time inside ``model.embed`` under inference_mode, each batch prepared (untimed)
just before, so it is as cache-warm as in ``embed``;
``embed`` = the embedding phase of ``embed_dataset`` (from its first batch to the manifest),
data generation/decoding excluded (it is reported separately). ``fwd in embed`` is the time
spent inside ``model.embed`` during that same run; "vs in-run fwd" compares against it, which
is the steadier figure on a busy machine (both halves see the same background load). Each figure is the best of
``--repeats`` runs, interleaved, to damp noise from other processes on the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from compatctl.data import load_data
from compatctl.data.transforms import Normalization, compute_normalization, normalize, to_tensor
from compatctl.models import ModelSpec, build_model, load_model, save_model


def make_model(arch: str, folder: Path, data_spec: str) -> Path:
    """An untrained model of ``arch`` saved with the data's normalization (speed does not depend on training)."""
    train = load_data(data_spec, "train")
    model = build_model(ModelSpec(arch, embedding_dim=128, num_classes=train.num_classes)).eval()
    path = folder / f"{arch}.safetensors"
    save_model(path, model, config={}, normalization=compute_normalization(train.images).to_dict(), lineage={},
               class_names=train.class_names, image_shape=train.image_shape)
    return path


def time_forward(model_path: Path, data_spec: str, batch_size: int, device: str) -> float:
    """Seconds spent inside model.embed over every batch; each input is prepared (untimed) just before."""
    model, header = load_model(model_path, device=device)
    images = load_data(data_spec, "test").images
    norm = Normalization.from_dict(header["normalization"])
    total = 0.0
    with torch.inference_mode():
        model.embed(normalize(to_tensor(images[:batch_size]).to(device), norm))  # warm-up
        for start in range(0, len(images), batch_size):
            batch = normalize(to_tensor(images[start:start + batch_size]).to(device), norm)
            _sync(device)
            tick = time.perf_counter()
            model.embed(batch)
            _sync(device)
            total += time.perf_counter() - tick
    return total


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_embed(model_path: Path, data_spec: str, out: Path, batch_size: int, shard_rows: int,
               device: str) -> tuple[float, float, float]:
    """(embedding-phase seconds, of which inside model.embed, data-loading seconds) of one embed_dataset run."""
    from compatctl.models import EmbeddingModel
    from compatctl.models.embed import embed_dataset

    marks = {"start": time.perf_counter(), "forward": 0.0}
    original = EmbeddingModel.embed

    def timed_embed(self, x):
        _sync(device)
        tick = time.perf_counter()
        result = original(self, x)
        _sync(device)
        marks["forward"] += time.perf_counter() - tick
        return result

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "embed" and done == 0:
            marks["embed"] = time.perf_counter()

    EmbeddingModel.embed = timed_embed
    try:
        embed_dataset(model_path, data_spec, out, split="test", batch_size=batch_size, shard_rows=shard_rows,
                      device=device, progress=progress)
    finally:
        EmbeddingModel.embed = original
    end = time.perf_counter()
    return end - marks["embed"], marks["forward"], marks["embed"] - marks["start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["tiny_cnn", "resnet20"])
    parser.add_argument("--rows", type=int, default=5000, help="test images of the builtin dataset")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_spec = f"builtin:train=1000,test={args.rows}"
    print(f"rows={args.rows} batch={args.batch_size} shard_rows={args.shard_rows} device={args.device} "
          f"threads={args.threads} best of {args.repeats}")
    columns = ("arch", "bare fwd s", "embed s", "fwd in embed s", "bare rows/s", "embed rows/s",
               "vs bare", "vs in-run fwd", "data load s")
    print(" | ".join(columns))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model_path = make_model(arch, Path(tmp), data_spec)
            bare, runs = [], []
            for repeat in range(args.repeats):  # interleaved, so both see the same background load
                bare.append(time_forward(model_path, data_spec, args.batch_size, args.device))
                runs.append(time_embed(model_path, data_spec, Path(tmp) / f"{arch}-{repeat}",
                                       args.batch_size, args.shard_rows, args.device))
            embed, inside, load = min(runs)
            in_run = min(total / forward - 1 for total, forward, _ in runs)
            row = (arch, f"{min(bare):.3f}", f"{embed:.3f}", f"{inside:.3f}", f"{args.rows / min(bare):,.0f}",
                   f"{args.rows / embed:,.0f}", f"{embed / min(bare) - 1:+.1%}", f"{in_run:+.1%}", f"{load:.3f}")
            print(" | ".join(row))


if __name__ == "__main__":
    main()
