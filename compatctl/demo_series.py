"""`compatctl demo --series`: three updates v1 → v2 → v3 on the built-in data, with real artifacts.

The protocol of issue 17, scaled to the demo's data: v1 is trained on the first 4 classes,
v2 on the first 7, v3 on all 10 (class counts scale with the data: 40 % and 70 %). Per
training method (BT² and BCT, their defaults; BT² distils from the independent model of its
version) v2 is trained with ``--old v1`` and v3 with ``--old v2``; the independent v2 and v3
are the FCT side and the reference for new/new. Every test split is embedded; the series
report is the query × gallery matrix of v1, v2, v3 plus the series metrics (evaluate/series.py).
Forward transforms on the independent models compare a chain H23∘H12 (backfill with two
``--transform``) against a direct H13 (fit-transform v1 → v3) on the v1 test gallery.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from compatctl.demo import DemoSettings, Progress, _embed, _fit, _stage, prepare_out, train_step
from compatctl.store import atomic_write_json

SERIES_METHODS = ("bt2", "bct")
VERSIONS = ("v1", "v2", "v3")
SHARES = {"v1": 0.4, "v2": 0.7, "v3": 1.0}  # of the classes: 4, 7, 10 of CIFAR-10's


def version_classes(version: str, num_classes: int) -> str:
    """The ``classes`` override of a version: the first 40 % / 70 % / all classes."""
    count = max(1, int(round(SHARES[version] * num_classes)))
    return "classes=all" if count >= num_classes else f"classes=[{','.join(map(str, range(count)))}]"


def _num_classes(data: str) -> int:
    from compatctl.data import load_data

    return load_data(data, "test").num_classes


def _train(settings: DemoSettings, out: Path, name: str, version: str, method: str, progress: Progress | None,
           num_classes: int, old: Path | None = None, overrides: tuple[str, ...] = ()) -> Path:
    from compatctl.train.config import load_train_config

    config = load_train_config(None, [
        f"data={settings.data}", f"arch={settings.arch}", f"epochs={settings.epochs}", f"method={method}",
        f"seed={settings.seed + VERSIONS.index(version)}", version_classes(version, num_classes),
        f"embedding_dim={settings.embedding_dim}", *overrides])
    return train_step(config, out / name, f"train {name}", settings.epochs, progress, old)


def train_series(settings: DemoSettings, out: Path, progress: Progress | None,
                 methods: tuple[str, ...] = SERIES_METHODS) -> dict[str, Path]:
    """v1; independent v2 and v3; per method v2 (--old v1) and v3 (--old v2). Keys like ``bt2-v3``."""
    from compatctl.store import read_header

    classes = _num_classes(settings.data)
    models = {"v1": _train(settings, out, "v1", "v1", "independent", progress, classes)}
    for version in VERSIONS[1:]:
        models[f"independent-{version}"] = _train(settings, out, f"independent-{version}", version, "independent",
                                                  progress, classes)
    for method in methods:
        old = models["v1"]
        for version in VERSIONS[1:]:
            width = int(read_header(old)["embedding_width"])  # BT²: each step keeps the previous width
            extra = (f"embedding_dim={width}", f"bt2.extra_dims={settings.embedding_dim // 4}",
                     f"bt2.teacher={models[f'independent-{version}']}") if method == "bt2" else ()
            old = models[f"{method}-{version}"] = _train(settings, out, f"{method}-{version}", version, method,
                                                         progress, classes, old=old, overrides=extra)
    return models


def _apply(gallery: Path, transforms: list[Path], out: Path, progress: Progress | None) -> Path:
    """backfill at budget 0: the gallery through one transform or a chain."""
    from compatctl.backfill import backfill

    step = "backfill " + " then ".join(t.stem for t in transforms)
    backfill(gallery, transforms if len(transforms) > 1 else transforms[0], out, budget=0.0,
             progress=_stage(progress, step))
    return out


def chain_vs_direct(settings: DemoSettings, models: dict[str, Path], sets: dict[str, Path], out: Path,
                    progress: Progress | None, kind: str = "mlp") -> dict[str, Path]:
    """Fit H12, H23 and H13 on the independent models' train pairs; apply chain and direct to the v1 gallery."""
    for name in ("v1", "independent-v2", "independent-v3"):
        sets[f"{name}-train"] = _embed(settings, models[name], out / "emb" / f"{name}-train", "train", progress)
    pairs = {"h12": ("v1", "independent-v2"), "h23": ("independent-v2", "independent-v3"),
             "h13": ("v1", "independent-v3")}
    transforms = {}
    for name, (old, new) in pairs.items():
        transforms[name] = out / "transforms" / f"{name}.safetensors"
        _fit(sets[f"{old}-train"], sets[f"{new}-train"], transforms[name], kind, settings, progress)
    sets["chain-test"] = _apply(sets["v1-test"], [transforms["h12"], transforms["h23"]],
                                out / "emb" / "h23_h12-v1-test", progress)
    sets["direct-test"] = _apply(sets["v1-test"], [transforms["h13"]], out / "emb" / "h13-v1-test", progress)
    return transforms


def series_reports(sources: dict, methods: tuple[str, ...]) -> dict[str, dict]:
    """Per method: the v1/v2/v3 compatibility matrix and its series metrics; independent vj/vj beside."""
    from compatctl.evaluate import evaluate
    from compatctl.evaluate.matrix import compatibility_matrix
    from compatctl.evaluate.series import series_metrics

    reports = {}
    for method in methods:
        named = {"v1": sources["v1-test"], "v2": sources[f"{method}-v2-test"], "v3": sources[f"{method}-v3-test"]}
        report = compatibility_matrix(named, reference="v1")
        report["series"] = series_metrics(report["matrix"])
        own = {(p["query"], p["gallery"]): p["metrics"]["top1"] for p in report["matrix"]["pairs"]}
        report["versus_independent"] = {}
        for version in VERSIONS[1:]:
            independent = sources[f"independent-{version}-test"]
            ceiling = evaluate(independent, independent)["metrics"]["top1"]
            report["versus_independent"][version] = {"top1": own[(version, version)], "independent_top1": ceiling,
                                                     "ratio": own[(version, version)] / max(ceiling, 1e-12)}
        reports[method] = report
    return reports


def transform_cases(sources: dict) -> dict[str, dict]:
    """v3 queries against the v1 gallery through the chain and through the direct transform; gap closed."""
    from compatctl.evaluate import evaluate

    old = evaluate(sources["v1-test"], sources["v1-test"])["metrics"]
    new = sources["independent-v3-test"]
    ceiling = evaluate(new, new)["metrics"]
    cases = {"v1/v1": old, "v3/v3 (independent)": ceiling}
    for name in ("chain", "direct"):
        metrics = evaluate(new, sources[f"{name}-test"])["metrics"]
        span = ceiling["top1"] - old["top1"]  # undefined (None) when the new model is not better than v1
        metrics["gap_closed_top1"] = (metrics["top1"] - old["top1"]) / span if span > 0 else None
        cases[f"v3/{'H23∘H12' if name == 'chain' else 'H13'}(v1)"] = metrics
    return {case: {k: None if v is None else float(v) for k, v in m.items() if k in ("top1", "map", "gap_closed_top1")}
            for case, m in cases.items()}


def run_series_demo(out: Path, *, settings: DemoSettings = DemoSettings(), progress: Progress | None = None,
                    methods: tuple[str, ...] = SERIES_METHODS) -> dict:
    """Run the series demo into ``out``; return the report (also ``out/report.json``).

    Raises BadInputError if ``out`` is a non-empty folder that an earlier demo did not make.
    """
    from compatctl.store import open_embeddings

    started = time.perf_counter()
    out = Path(out)
    prepare_out(out)
    models = train_series(settings, out, progress, methods)
    sets = {f"{name}-test": _embed(settings, path, out / "emb" / f"{name}-test", "test", progress)
            for name, path in models.items()}
    transforms = chain_vs_direct(settings, models, sets, out, progress)
    sources = {name: open_embeddings(path) for name, path in sets.items()}
    if progress is not None:
        progress("evaluate", 0, 1)
    report = {"settings": dataclasses.asdict(settings), "series": series_reports(sources, methods),
              "transforms": transform_cases(sources),
              "artifacts": {"models": {k: str(v) for k, v in models.items()},
                            "embeddings": {k: str(v) for k, v in sets.items()},
                            "transforms": {k: str(v) for k, v in transforms.items()}}}
    if progress is not None:
        progress("evaluate", 1, 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "report.json", report)
    return report

