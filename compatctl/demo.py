"""`compatctl demo`: the whole model update on the built-in data, with real artifacts.

The steps are the ones a team runs in a pipeline, through the same library functions the
commands call: train an old model on the first half of the classes; train new models on all
classes (independent, BCT, BT²); embed; fit forward transforms (FCT-style mlp with FastFill
uncertainty, and closed-form linear); apply them to the old gallery (backfill, budget 0); then
evaluate every case and the backfill curves (random vs uncertainty order).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from compatctl.errors import BadInputError
from compatctl.store import atomic_write_json

MARKER = ".compatctl-demo"
Progress = Callable[[str, int, int], None]  # progress(step, done, total)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults finish in 30-60 s on 2 CPU cores."""

    data: str = "builtin:classes=10,train=4000,test=1000,size=16"
    arch: str = "tiny_cnn"
    embedding_dim: int = 32
    epochs: int = 10
    transform_epochs: int = 40
    curve_steps: int = 20
    seed: int = 0


QUICK = DemoSettings(data="builtin:classes=6,train=1500,test=400", epochs=4, transform_epochs=15, curve_steps=5)

NEW_METHODS = ("independent", "bct", "bt2")
ORDERS = ("random", "uncertainty")


def _stage(progress: Progress | None, step: str) -> Callable[[str, int, int], None] | None:
    """Adapt a (stage, done, total) callback of the library to this demo step's bar."""
    return (lambda _stage, done, total: progress(step, done, total)) if progress else None


def prepare_out(out: Path) -> None:
    """Use ``out`` if it is new, empty or an earlier demo's folder (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise BadInputError(f"--out {out}: folder is not empty and was not made by `compatctl demo`; "
                                "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by compatctl demo; the next demo run with this --out replaces it\n")


def _train(settings: DemoSettings, out: Path, name: str, progress: Progress | None,
           old: Path | None = None, overrides: tuple[str, ...] = ()) -> Path:
    from compatctl.train.config import load_train_config

    method = "independent" if name == "old" else name
    # New models get another seed than the old one: the same seed means the same initial
    # weights, which would make an "independent" new model look compatible by accident.
    seed = settings.seed + (0 if name == "old" else 1)
    config = load_train_config(None, [
        f"data={settings.data}", f"arch={settings.arch}", f"embedding_dim={settings.embedding_dim}",
        f"epochs={settings.epochs}", f"seed={seed}", f"method={method}",
        f"classes={'first_half' if name == 'old' else 'all'}", *overrides])
    return train_step(config, out / name, f"train {name}", settings.epochs, progress, old)


def train_step(config, out_dir: Path, step: str, epochs: int, progress: Progress | None, old: Path | None) -> Path:
    """``train_model`` under the demo's progress bar for ``step`` (also used by the series demo)."""
    from compatctl.train.trainer import train_model

    def on_event(event: dict) -> None:
        if progress is not None and event.get("event") in ("start", "epoch"):
            progress(step, event.get("epoch", 0), epochs)

    model = train_model(config, out_dir=out_dir, old_model=old, progress=on_event)
    if progress is not None:
        progress(step, epochs, epochs)  # done: the bar ends full whatever the last event was
    return model


def _embed(settings: DemoSettings, model: Path, out: Path, split: str, progress: Progress | None) -> Path:
    from compatctl.models.embed import embed_dataset

    return embed_dataset(model, settings.data, out, split=split,
                         progress=_stage(progress, f"embed {model.parent.name} ({split})"))


def _fit(old: Path, new: Path, out: Path, kind: str, settings: DemoSettings, progress: Progress | None) -> dict:
    from compatctl.transform.config import load_transform_config
    from compatctl.transform.fit import fit_transform

    overrides = [f"kind={kind}", f"seed={settings.seed}"]
    if kind == "mlp":
        overrides += ["uncertainty=true", f"epochs={settings.transform_epochs}"]
    step = f"fit-transform {kind}"

    total = [settings.transform_epochs if kind == "mlp" else 1]

    def on_event(event: dict) -> None:
        if progress is not None and event.get("event") == "epoch":
            total[0] = event["epochs"]
            progress(step, event["epoch"], event["epochs"])

    report = fit_transform(old, new, out, config=load_transform_config(None, overrides), progress=on_event)
    if progress is not None:
        progress(step, total[0], total[0])  # early stopping ends a fit before its last epoch: show it done
    return report


def _apply(gallery: Path, transform: Path, out: Path, progress: Progress | None) -> Path:
    from compatctl.backfill import backfill

    backfill(gallery, transform, out, budget=0.0, progress=_stage(progress, f"backfill {transform.stem} (budget 0)"))
    return out


def train_models(settings: DemoSettings, out: Path, progress: Progress | None) -> dict[str, Path]:
    """The old model, then the new ones; BT² distils from the independent new model."""
    models = {"old": _train(settings, out, "old", progress)}
    models["independent"] = _train(settings, out, "independent", progress)
    models["bct"] = _train(settings, out, "bct", progress, old=models["old"])  # BCT and BT² keep their defaults
    models["bt2"] = _train(settings, out, "bt2", progress, old=models["old"], overrides=(
        f"bt2.teacher={models['independent']}", f"bt2.extra_dims={settings.embedding_dim // 4}"))
    return models


def embed_all(settings: DemoSettings, models: dict[str, Path], out: Path, progress: Progress | None) -> dict[str, Path]:
    """Test-split embeddings of every model; train-split ones of old and new for fitting transforms."""
    sets = {f"{name}-test": _embed(settings, path, out / "emb" / f"{name}-test", "test", progress)
            for name, path in models.items()}
    for name in ("old", "independent"):
        sets[f"{name}-train"] = _embed(settings, models[name], out / "emb" / f"{name}-train", "train", progress)
    return sets


def fit_and_apply(settings: DemoSettings, sets: dict[str, Path], out: Path, progress: Progress | None) -> dict:
    """Fit mlp (with uncertainty) and linear transforms on train pairs; apply them to the old test gallery."""
    fits = {}
    for kind in ("mlp", "linear"):
        transform = out / "transforms" / f"{kind}.safetensors"
        fits[kind] = _fit(sets["old-train"], sets["independent-train"], transform, kind, settings, progress)
        sets[f"h_{kind}-test"] = _apply(sets["old-test"], transform, out / "emb" / f"h_{kind}-test", progress)
    return fits


def evaluate_cases(sources: dict, progress: Progress | None) -> dict[str, dict]:
    """Top-1 and mAP of every (query model, gallery) case of the protocol."""
    from compatctl.evaluate import evaluate

    cases = {"old/old": ("old-test", "old-test")}
    for name in NEW_METHODS:
        cases[f"{name} new/new"] = (f"{name}-test", f"{name}-test")
        cases[f"{name} new/old"] = (f"{name}-test", "old-test")
    for kind in ("mlp", "linear"):
        cases[f"new/h(old) {kind}"] = ("independent-test", f"h_{kind}-test")
    results = {}
    for index, (case, (query, gallery)) in enumerate(cases.items()):
        if progress is not None:
            progress("evaluate cases", index, len(cases))
        metrics = evaluate(sources[query], sources[gallery])["metrics"]
        results[case] = {"top1": metrics["top1"], "top5": metrics["top5"], "map": metrics["map"]}
    if progress is not None:
        progress("evaluate cases", len(cases), len(cases))
    return results


def backfill_curves(settings: DemoSettings, sources: dict, progress: Progress | None) -> dict[str, dict]:
    """Backfill curves from the mlp-transformed old gallery towards the new gallery, per order."""
    from compatctl.evaluate.curve import backfill_curve

    curves = {}
    for order in ORDERS:
        new = sources["independent-test"]
        report = backfill_curve(new, sources["h_mlp-test"], new, order=order, steps=settings.curve_steps,
                                seed=settings.seed, progress=_stage(progress, f"backfill curve ({order})"))
        curves[order] = report["curve"]
    return curves


def run_demo(out: Path, *, settings: DemoSettings = DemoSettings(), progress: Progress | None = None) -> dict:
    """Run the whole demo into ``out``; return the report (also written to ``out/report.json``).

    Raises BadInputError if ``out`` is a non-empty folder that an earlier demo did not make.
    """
    started = time.perf_counter()
    out = Path(out)
    prepare_out(out)
    models = train_models(settings, out, progress)
    sets = embed_all(settings, models, out, progress)
    fits = fit_and_apply(settings, sets, out, progress)
    from compatctl.store import open_embeddings

    sources = {name: open_embeddings(path) for name, path in sets.items()}  # opened (and verified) once
    report = {"settings": dataclasses.asdict(settings), "cases": evaluate_cases(sources, progress),
              "curves": backfill_curves(settings, sources, progress),
              "transforms": {kind: {k: fit.get(k) for k in ("validation", "seconds", "parameters") if k in fit}
                             for kind, fit in fits.items()},
              "artifacts": {"models": {k: str(v) for k, v in models.items()},
                            "embeddings": {k: str(v) for k, v in sets.items()},
                            "transforms": {k: str(out / "transforms" / f"{k}.safetensors") for k in fits}}}
    report["plot"] = _plot(report["curves"], out / "backfill_curve.png")
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "report.json", report)
    return report


def _plot(curves: dict[str, dict], path: Path) -> str | None:
    """Draw the curves (compatctl.evaluate.plot); None when matplotlib is not installed."""
    from compatctl.evaluate.plot import plot_curves

    try:
        plot_curves(curves, path)
    except BadInputError:
        return None
    return str(path)


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """Rows (case, top-1, mAP, note) of the demo table, in protocol order."""
    cases = report["cases"]
    base = cases["old/old"]
    rows = [("old/old", f"{base['top1']:.3f}", f"{base['map']:.3f}", "the old model alone")]
    for case, metrics in cases.items():
        if case == "old/old":
            continue
        note = ""
        if case.endswith("new/old"):
            note = "compatible" if metrics["top1"] > base["top1"] else "NOT compatible (below old/old)"
        elif case.startswith("new/h(old)"):
            ceiling = cases["independent new/new"]["top1"]
            gap = (metrics["top1"] - base["top1"]) / max(ceiling - base["top1"], 1e-12)
            note = f"gap closed {gap:.2f}"
        rows.append((case, f"{metrics['top1']:.3f}", f"{metrics['map']:.3f}", note))
    for order, curve in report["curves"].items():
        rows.append((f"backfill AUC ({order})", f"{curve['auc']['top1']:.3f}", f"{curve['auc']['map']:.3f}",
                     f"mean of {len(curve['fractions'])} points, 0..1"))
    return rows
