"""kind auto: selection on validation retrieval, the candidates' table, the defaults it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.transform import TransformConfig, fit_transform, load_transform, load_transform_config
from tests.transform.helpers import clustered_old, save_set

FAST_MLP = {"width": 64, "branch_width": 64, "blocks": 1, "epochs": 8, "batch_size": 128, "threads": 1}


def _fit(tmp_path, old, new, labels=None, side=None, **config):
    old_path = save_set(tmp_path / "old", old, labels=labels)
    new_path = save_set(tmp_path / "new", new, labels=labels)
    side_path = save_set(tmp_path / "side", side) if side is not None else None
    out = tmp_path / "h.safetensors"
    report = fit_transform(old_path, new_path, out, side_info_path=side_path, config=TransformConfig(**config))
    return report, load_transform(out)


def _closed_form_rows(table):
    return [row for row in table if row["kind"] in ("linear", "procrustes")]


def nonlinear_pair(rows: int, seed: int = 0):
    """Clustered latent; new = an even, saturating function of it (no linear map fits); old = latent."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, rows)
    latent = rng.normal(size=(8, 6))[labels] * 1.5 + 0.6 * rng.normal(size=(rows, 6))
    hidden = np.tanh(latent @ rng.normal(size=(6, 48))) ** 2
    return latent.astype(np.float32), (hidden @ rng.normal(size=(48, 16))).astype(np.float32), labels


def test_auto_keeps_a_closed_form_on_a_linear_map(tmp_path):
    old, labels = clustered_old(1500, 8, classes=10)
    rng = np.random.default_rng(5)
    new = old @ rng.normal(size=(8, 12)) + 0.3 * rng.normal(size=(1500, 12))
    report, transform = _fit(tmp_path, old, new.astype(np.float32), labels, **FAST_MLP)
    table = report["candidates"]["table"]
    best_closed = max(row["top1"] for row in _closed_form_rows(table))
    assert report["kind"] in ("linear", "procrustes") and transform.kind == report["kind"]
    assert report["metrics"]["top1"] >= best_closed - 1e-9
    assert next(row for row in table if row["chosen"])["top1"] == pytest.approx(best_closed, abs=1e-9)


def test_auto_picks_the_mlp_on_a_clearly_nonlinear_map(tmp_path):
    old, new, labels = nonlinear_pair(1500)
    report, transform = _fit(tmp_path, old, new, labels, **{**FAST_MLP, "epochs": 8})
    table = report["candidates"]["table"]
    chosen = next(row for row in table if row["chosen"])
    assert report["kind"] == "mlp" and chosen["kind"] == "mlp" and chosen["gain_se"] > 2.0
    assert report["metrics"]["top1"] > max(row["top1"] for row in _closed_form_rows(table)) + 0.02
    assert transform.header["architecture"]["best_epoch"] > 0


def test_candidates_table_is_in_the_metadata(tmp_path):
    old, labels = clustered_old(600, 6)
    new = np.tanh(old).astype(np.float32)
    report, transform = _fit(tmp_path, old, new, labels, **FAST_MLP, cv_folds=0)  # the single split
    record = transform.header["candidates"]
    assert record["metric"] == "top1" and record["tie_break"] == "map" and record["distance"] == "cosine"
    assert record["split"] == "validation" and record["rows"] == 60
    names = [row["candidate"] for row in record["table"]]
    assert names[:6] == [f"linear ridge={r:g}" for r in TransformConfig().ridge_grid]
    assert names[6] == "procrustes" and names[7].startswith("mlp on ")
    assert sum(row["chosen"] for row in record["table"]) == 1
    assert record == report["candidates"]


def _ridge_case(noise: float):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 300)
    old = (rng.normal(size=(4, 40))[labels] + rng.normal(size=(300, 40))).astype(np.float32)
    return old, (old[:, :10] + noise * rng.normal(size=(300, 10))).astype(np.float32), labels


def test_ridge_strength_is_the_grids_best_on_validation(tmp_path):
    old, new, labels = _ridge_case(3.0)  # few rows, many dims, noisy targets: shrinkage pays
    report, transform = _fit(tmp_path, old, new, labels, kind="linear", validation_fraction=0.3)
    table = report["candidates"]["table"]
    assert [row["kind"] for row in table] == ["linear"] * 6
    best = max(table, key=lambda row: (row["top1"], row["map"]))
    assert best["chosen"] and transform.header["architecture"]["ridge"] == pytest.approx(10.0)
    assert best["candidate"] == "linear ridge=10" and best["top1"] > table[0]["top1"] + 0.02


def test_a_fixed_ridge_is_not_searched(tmp_path):
    old, new, labels = _ridge_case(3.0)
    report, transform = _fit(tmp_path, old, new, labels, kind="linear", ridge=0.5)
    assert [row["candidate"] for row in report["candidates"]["table"]] == ["linear ridge=0.5"]
    assert transform.header["architecture"]["ridge"] == 0.5


def test_without_labels_it_selects_on_finding_the_own_pair(tmp_path):
    old, new, _ = nonlinear_pair(800)
    report, transform = _fit(tmp_path, old, new, None, **{**FAST_MLP, "epochs": 3})
    assert report["candidates"]["metric"] == "pair_top1" and report["candidates"]["tie_break"] == "pair_mrr"
    assert 0.0 <= report["metrics"]["pair_top1"] <= 1.0 and "top1" not in report["metrics"]


def test_scorer_hits_agree_with_eval_top1():
    from compatctl.transform.pairs import Pairs
    from compatctl.transform.select import Scorer

    old, labels = clustered_old(400, 5)
    new = np.tanh(old) + 0.1
    for distance in ("cosine", "l2"):
        scorer = Scorer.build(Pairs(old, new.astype(np.float32), np.arange(400), labels=labels), distance, 1000, 0)
        assert scorer.hits(old).mean() == pytest.approx(scorer.score(old)["top1"], abs=1e-9)


def test_mlp_epoch_zero_is_the_closed_form():
    pytest.importorskip("torch")
    import torch

    from compatctl.transform.closed_form import affine_apply, ridge_path
    from compatctl.transform.mlp import build_net
    from compatctl.transform.pairs import Pairs

    rng = np.random.default_rng(2)
    old, side = rng.normal(size=(200, 5)).astype(np.float32) * 3 + 1, rng.normal(size=(200, 3)).astype(np.float32)
    pairs = Pairs(old, rng.normal(size=(200, 7)).astype(np.float32) + 2, np.arange(200), side)
    base, _ = next(ridge_path(pairs, [0.01]))
    net = build_net(pairs, TransformConfig(width=16, branch_width=16), base)
    with torch.no_grad():
        out = net.forward_raw(torch.from_numpy(old), torch.from_numpy(side))[0].numpy()
    np.testing.assert_allclose(out, affine_apply(base, old, side), atol=1e-4)


def test_discriminative_term_is_off_by_default():
    assert TransformConfig().discriminative_weight == 0.0 and TransformConfig().kind == "auto"
    assert TransformConfig().contrastive_weight == 0.0 and TransformConfig().structure_weight == 0.0


def _run(runner, *args):
    result = runner.invoke(app, ["fit-transform", *map(str, args)])
    return result, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture
def labelled_pair(tmp_path):
    old, labels = clustered_old(300, 6)
    new = np.tanh(old).astype(np.float32)
    return save_set(tmp_path / "old", old, labels=labels), save_set(tmp_path / "new", new, labels=labels), tmp_path


def test_an_old_config_with_discriminative_weight_null_still_loads(runner, labelled_pair):
    old, new, tmp = labelled_pair
    (tmp / "old.yaml").write_text("kind: mlp\ndiscriminative_weight: null\nepochs: 2\nwidth: 16\nbranch_width: 16\n")
    assert load_transform_config(tmp / "old.yaml").discriminative_weight is None
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "--config", tmp / "old.yaml")
    assert result.exit_code == 0, text
    assert "discriminative_weight: null is read as 0" in text
    assert load_transform(tmp / "h.safetensors").header["config"]["discriminative_weight"] == 0.0


def test_cli_prints_the_candidates_table(runner, labelled_pair):
    old, new, tmp = labelled_pair
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "epochs=2", "width=16", "branch_width=16")
    assert result.exit_code == 0, text
    assert "candidates on 300 5-fold pairs" in text and "procrustes" in text and "mlp on linear" in text
    assert "val top1" in text and "val map" in text and "5-fold out-of-fold top1" in text
    result, text = _run(runner, old, new, "--out", tmp / "h2.safetensors", "epochs=2", "width=16",
                        "branch_width=16", "cv_folds=0")
    assert result.exit_code == 0, text
    assert "candidates on 30 validation pairs" in text and "val top1" in text


def test_auto_refuses_without_a_validation_split(runner, labelled_pair):
    old, new, tmp = labelled_pair
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "validation_fraction=0")
    assert result.exit_code == 2 and "validation_fraction" in text and "Traceback" not in text


def test_no_validation_split_labels_the_metrics_train(runner, labelled_pair):
    old, new, tmp = labelled_pair
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "kind=linear", "validation_fraction=0")
    assert result.exit_code == 0, text
    assert "TRAIN (no validation split) top1" in text and "val top1" not in text
    header = load_transform(tmp / "h.safetensors").header
    assert "train_metrics" in header and "validation" not in header and "candidates" not in header


def test_auto_trains_one_mlp_per_input_noise_value(tmp_path):
    old, labels = clustered_old(600, 6)
    new = np.tanh(old).astype(np.float32)
    report, _ = _fit(tmp_path, old, new, labels, **FAST_MLP)
    mlps = [row["candidate"] for row in report["candidates"]["table"] if row["kind"] == "mlp"]
    assert len(mlps) == 2 and mlps[0].endswith("input_noise=0") and mlps[1].endswith("input_noise=1")
    report, _ = _fit(tmp_path, old, new, labels, **{**FAST_MLP, "input_noise_grid": [0.0]})
    mlps = [row["candidate"] for row in report["candidates"]["table"] if row["kind"] == "mlp"]
    assert len(mlps) == 1 and "input_noise" not in mlps[0]


def test_small_sets_get_at_least_min_epoch_steps_per_epoch():
    from compatctl.transform.mlp_fit import epoch_steps

    config = TransformConfig()  # batch 512, min_epoch_steps 80
    assert epoch_steps(1131, config) == 81  # 27 passes of 3 steps
    assert epoch_steps(45_000, config) == 88  # one pass already has more
    assert epoch_steps(45_000, TransformConfig(min_epoch_steps=1)) == 88


@pytest.mark.parametrize("grid", ["[]", "[-1.0]"])
def test_bad_input_noise_grid_is_refused(grid):
    from compatctl.errors import ConfigError

    with pytest.raises(ConfigError, match="input_noise_grid"):
        load_transform_config(None, [f"input_noise_grid={grid}"])


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_leave_one_out_top1_is_evals_top1(distance):
    """The benchmarks' in-memory top-1 gives what `eval` reports (leave-one-out, same distance)."""
    from compatctl.evaluate import evaluate
    from compatctl.store import EmbeddingBlock
    from compatctl.transform import leave_one_out_top1

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 300)
    queries = (rng.standard_normal((300, 8)) + labels[:, None]).astype(np.float32)
    gallery = (queries + 0.8 * rng.standard_normal((300, 8))).astype(np.float32)
    ids = np.arange(300)
    expected = evaluate(EmbeddingBlock(queries, ids, labels), EmbeddingBlock(gallery, ids, labels),
                        distance=distance, topk=(1,))["metrics"]["top1"]
    assert leave_one_out_top1(queries, gallery, labels, distance) == pytest.approx(expected, abs=1e-9)


def test_small_sets_select_by_kfold_and_refit_on_all_pairs(tmp_path):
    old, new, labels = nonlinear_pair(400)  # 40 validation rows: the mlp's gain is within noise there
    single, _ = _fit(tmp_path, old, new, labels, **FAST_MLP, cv_folds=0)
    assert single["kind"] in ("linear", "procrustes") and single["candidates"]["split"] == "validation"
    report, transform = _fit(tmp_path, old, new, labels, **FAST_MLP)  # cv_folds 5: all 400 rows scored
    record = transform.header["candidates"]
    assert report["kind"] == "mlp" and record["split"] == "5-fold" and record["rows"] == 400
    chosen = next(row for row in record["table"] if row["chosen"])
    assert chosen["gain_se"] > 2.0 and chosen["only_mlp_right"] + chosen["only_closed_form_right"] > 40
    assert report["train_rows"] == 400 and report["metrics_split"] == "5-fold"
    assert report["metrics"]["top1"] == pytest.approx(chosen["top1"], abs=1e-12)  # out-of-fold = the table's
    architecture = transform.header["architecture"]
    # one epoch count for all folds, named in the table; the refit on all pairs stops there
    assert architecture["selection"] == "5-fold" and 1 <= architecture["best_epoch"] <= FAST_MLP["epochs"]
    assert architecture["epochs_run"] == architecture["best_epoch"]
    assert f"({architecture['best_epoch']} of {FAST_MLP['epochs']} epochs)" in chosen["candidate"]
    assert report["metrics"]["top1"] > max(row["top1"] for row in _closed_form_rows(record["table"])) + 0.05


def test_kfold_scores_every_pair_once_per_epoch_from_the_closed_form():
    """Folds partition the pairs; every epoch's record holds a hit for every pair; epoch 0 is the closed form."""
    from compatctl.transform.closed_form import affine_apply
    from compatctl.transform.fit import _closed_form_candidates
    from compatctl.transform.kfold import _fold_mlps, make_folds
    from compatctl.transform.pairs import Pairs

    old, new, labels = nonlinear_pair(300)
    pairs = Pairs(old, new, np.arange(300), labels=labels)
    config = TransformConfig(**{**FAST_MLP, "epochs": 4, "input_noise_grid": [0.0]})
    folds = make_folds(pairs, config)
    assert sorted(np.concatenate([fold.held for fold in folds]).tolist()) == list(range(300))
    base = [_closed_form_candidates(fold.train, None, config, False, selecting=True)[0][1] for fold in folds]
    epochs = _fold_mlps(folds, base, config, None)
    assert len(epochs) == 5 and all(len(record.all_hits()) == 300 for record in epochs)
    closed_hits = np.concatenate([fold.scorer.hits(affine_apply(b, fold.scorer.pairs.old)) for fold, b in zip(folds, base)])
    np.testing.assert_array_equal(epochs[0].all_hits(), closed_hits)  # epoch 0 is the closed form in every fold


def test_kfold_is_off_for_large_validation_splits():
    from compatctl.transform.kfold import uses_kfold

    config = TransformConfig()
    assert uses_kfold(config, 126) and not uses_kfold(config, 2000)
    assert not uses_kfold(TransformConfig(uncertainty=True), 126) and not uses_kfold(TransformConfig(cv_folds=1), 126)
    assert not uses_kfold(TransformConfig(kind="mlp"), 126) and not uses_kfold(TransformConfig(kind="procrustes"), 126)
    assert uses_kfold(TransformConfig(kind="linear"), 126) and not uses_kfold(TransformConfig(kind="linear", ridge=0.1), 126)


def test_auto_keeping_ridge_is_exactly_kind_linear(tmp_path):
    old, labels = clustered_old(500, 8, classes=10)
    rng = np.random.default_rng(3)
    # anisotropic: no rotation + scale (procrustes) fits it, ridge does
    new = (old @ (rng.normal(size=(8, 12)) * np.geomspace(8, 0.05, 12)) + 0.3 * rng.normal(size=(500, 12)))
    new = new.astype(np.float32)
    auto, auto_t = _fit(tmp_path / "auto", old, new, labels, **{**FAST_MLP, "epochs": 2}, input_noise_grid=[0.0])
    linear, linear_t = _fit(tmp_path / "linear", old, new, labels, kind="linear")
    assert linear["metrics_split"] == "5-fold" and linear["train_rows"] == 500
    assert auto["kind"] == "linear" and auto["metrics_split"] == "5-fold"
    for name, tensor in linear_t.tensors.items():  # the same pooled ridge choice, refit on the same pairs
        np.testing.assert_allclose(auto_t.tensors[name], tensor, atol=1e-6)
