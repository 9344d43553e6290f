"""The robustness matrix: every training method, with default settings, on settings that differ
in data, architecture, embedding width and class split.

    python benchmarks/robustness.py --out runs/robustness                 # the full matrix
    python benchmarks/robustness.py --out runs/robustness --size small    # minutes (the slow test)
    python benchmarks/robustness.py --out runs/robustness --settings digits,builtin

Per setting: an old model on a subset of the classes, then on all classes an independent new
model, BCT and BT² against that old model. Only the setting's own keys are set (data, classes,
arch, embedding_dim, epochs, seed); every method key keeps its default. BT² follows the
reference recipe of three models: it distils from the independent new model (``bt2.teacher``;
``--no-bt2-teacher`` trains it without). Each model embeds the
setting's test split; the test split is query set and gallery (leave-one-out, cosine). Printed
per setting: old/old, new/new and new/old top-1 (%) and the criteria of the compatibility
protocol: BCT and BT² new/old > old/old, BT² new/new >= 0.97 x independent new/new.

Settings (the ``--data-dir`` files are written once from their sources):

- ``builtin``: the generated data, 32x32 RGB, 10 classes, tiny_cnn 128-d, old on classes 0-4;
- ``digits``: the 8x8 grey digits scikit-learn ships (1,797 images, 75/25 split), resnet20
  64-d, old on digits 0-4 (needs scikit-learn);
- ``cifar10``: a class-balanced subset of CIFAR-10 (``--cifar`` tarball), tiny_cnn 128-d, old
  on classes 0-4;
- ``cifar10-gray16``: the same images in grey at 16x16, resnet20 64-d, old on the odd classes.

Runs are kept under ``--out`` keyed by a hash of their full config, so a changed default
retrains exactly the runs it affects and a re-run reuses the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_jpg.tar.gz"

# name -> (data file or spec, setting keys, old-model classes, epochs factor); epochs per size below.
# The digits have 1,347 training images (11 steps an epoch), so their runs get 4x the epochs.
SETTINGS = {
    "builtin": ("builtin", {"arch": "tiny_cnn", "embedding_dim": 128}, "first_half", 1),
    "digits": ("digits.npz", {"arch": "resnet20", "embedding_dim": 64}, "first_half", 4),
    "cifar10": ("cifar10.npz", {"arch": "tiny_cnn", "embedding_dim": 128}, "first_half", 1),
    "cifar10-gray16": ("cifar10-gray16.npz", {"arch": "resnet20", "embedding_dim": 64}, [1, 3, 5, 7, 9], 1),
}
# size -> (old epochs, new epochs, CIFAR train images per class, CIFAR test images per class, builtin spec)
SIZES = {
    "full": (8, 10, 1000, 200, "builtin:train=5000,test=1000"),
    "small": (3, 4, 150, 40, "builtin:train=1200,test=300"),
}
METHODS = ("independent", "bct", "bt2")


def digits_npz(path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.75 * len(order))
    train, test = order[:cut], order[cut:]
    np.savez(path, x_train=images[train], y_train=digits.target[train], x_test=images[test],
             y_test=digits.target[test], class_names=np.array([str(d) for d in range(10)]))


def balanced(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def cifar_npz(path: Path, cifar: Path, train_per_class: int, test_per_class: int, gray16: bool) -> None:
    from compatctl.data import load_data

    splits = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        data = load_data(str(cifar), split)
        keep = balanced(data.labels, per_class, seed=0)
        images = data.images[keep]
        if gray16:
            grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            grey = grey.reshape(len(grey), 16, 2, 16, 2).mean(axis=(2, 4))
            images = np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]
        splits[split] = (images, data.labels[keep])
        names = data.class_names
    np.savez(path, x_train=splits["train"][0], y_train=splits["train"][1], x_test=splits["test"][0],
             y_test=splits["test"][1], class_names=np.array(names))


def data_spec(name: str, size: str, data_dir: Path, cifar: Path) -> str:
    source = SETTINGS[name][0]
    old_epochs, new_epochs, train_pc, test_pc, builtin = SIZES[size]
    if name == "builtin":
        return builtin
    path = data_dir / (source if name == "digits" else f"{size}-{source}")
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if name == "digits":
            digits_npz(path)
        else:
            cifar_npz(path, cifar, train_pc, test_pc, gray16=name.endswith("gray16"))
    return str(path)


def code_version() -> str:
    """A digest of the training code (train/, models/, data/transforms.py): a run is reused only
    when neither its config nor this code changed."""
    package = ROOT / "compatctl"
    files = sorted([*package.glob("train/*.py"), *package.glob("models/*.py"), package / "data" / "transforms.py"])
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:16]


def train(out: Path, overrides: list[str], old: Path | None) -> tuple[Path, float]:
    """Train (or reuse) the run of ``overrides``; returns (model path, seconds trained)."""
    from compatctl.config import to_dict
    from compatctl.train.config import load_train_config
    from compatctl.train.trainer import train_model

    config = load_train_config(None, overrides)
    key = json.dumps({"config": to_dict(config), "old": str(old), "code": code_version()}, sort_keys=True)
    run = out / hashlib.sha256(key.encode()).hexdigest()[:12]
    model = run / "model.safetensors"
    if model.exists():
        return model, 0.0
    started = time.perf_counter()
    train_model(config, out_dir=run, old_model=old)
    return model, time.perf_counter() - started


def embed(model: Path, spec: str):
    from compatctl.data import load_data
    from compatctl.models import embed_images, load_model
    from compatctl.store import EmbeddingBlock

    net, header = load_model(model, "cpu")
    data = load_data(spec, "test")
    return EmbeddingBlock(embed_images(net, header, data.images), np.arange(len(data.labels)), data.labels)


def top1(query, gallery, dims: int | None = None) -> float:
    from compatctl.evaluate import evaluate

    return evaluate(query, gallery, topk=(1,), dims=dims, with_map=False)["metrics"]["top1"]


def run_setting(name: str, size: str, out: Path, data_dir: Path, cifar: Path, seed: int, teacher: bool) -> dict:
    _, keys, old_classes, factor = SETTINGS[name]
    old_epochs, new_epochs = (factor * epochs for epochs in SIZES[size][:2])
    spec = data_spec(name, size, data_dir, cifar)
    base = [f"data={spec}", f"seed={seed}"] + [f"{k}={v}" for k, v in keys.items()]
    classes = json.dumps(old_classes) if isinstance(old_classes, list) else old_classes
    runs = out / name
    old, seconds = train(runs, base + [f"classes={classes}", f"epochs={old_epochs}"], None)
    sets = {"old": embed(old, spec)}
    times = {"old": seconds}
    models = {}
    for method in METHODS:
        extra = [f"bt2.teacher={models['independent']}"] if method == "bt2" and teacher else []
        models[method], seconds = train(runs, base + [f"method={method}", f"epochs={new_epochs}",
                                                      f"seed={seed + 1}", *extra],
                                        None if method == "independent" else old)
        sets[method], times[method] = embed(models[method], spec), seconds
    d_old = sets["old"].embeddings.shape[1]
    row = {"old/old": top1(sets["old"], sets["old"])}
    for method in METHODS:
        row[f"{method} new/new"] = top1(sets[method], sets[method])
        row[f"{method} new/old"] = top1(sets[method], sets["old"], dims=d_old)
    row["seconds"] = sum(times.values())
    return row


def criteria(row: dict) -> dict[str, bool]:
    return {"bct new/old > old/old": row["bct new/old"] > row["old/old"],
            "bt2 new/old > old/old": row["bt2 new/old"] > row["old/old"],
            "bt2 new/new >= 0.97 indep": row["bt2 new/new"] >= 0.97 * row["independent new/new"]}


def print_table(rows: dict[str, dict]) -> bool:
    columns = ["old/old", "independent new/new", "independent new/old", "bct new/new", "bct new/old",
               "bt2 new/new", "bt2 new/old"]
    short = ["old/old", "ind n/n", "ind n/o", "bct n/n", "bct n/o", "bt2 n/n", "bt2 n/o"]
    print(f"{'setting':<16}" + "".join(f"{c:>9}" for c in short) + "  criteria (bct n/o, bt2 n/o, bt2 n/n)")
    passed = True
    for name, row in rows.items():
        checks = criteria(row)
        passed &= all(checks.values())
        marks = " ".join("pass" if ok else "FAIL" for ok in checks.values())
        print(f"{name:<16}" + "".join(f"{100 * row[c]:>9.1f}" for c in columns) + f"  {marks}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/robustness"))
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cifar", type=Path, default=CIFAR, help="the CIFAR-10 tarball")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-bt2-teacher", dest="teacher", action="store_false",
                        help="train BT² without distilling from the independent model (bt2.teacher unset)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    rows = {}
    for name in names:
        started = time.perf_counter()
        rows[name] = run_setting(name, args.size, args.out / args.size, args.out / "data", args.cifar, args.seed,
                                 args.teacher)
        print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if print_table(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
