"""``--engine ray``: embed and backfill byte-identical to one process, eval metrics identical, resumes.

One local Ray instance (2 CPUs) serves the whole module; its workers import compatctl from this
checkout (PYTHONPATH), so they run the code under test.
"""

from __future__ import annotations

import filecmp
import os
import signal
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.engines import RaySettings
from compatctl.store import open_embeddings, write_embedding_set
from tests.backfill.conftest import fit, make_world
from tests.evaluate.reference import random_pair

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
DATA = "builtin:classes=4,train=40,test=50,size=16"
TWO = RaySettings(workers=2)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    cache = tmp_path_factory.mktemp("decoded-cache")
    os.environ["COMPATCTL_CACHE_DIR"] = str(cache)  # the driver's runs use the same cache as the workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                       "COMPATCTL_CACHE_DIR": str(cache)}})
    yield
    ray.shutdown()
    os.environ.pop("COMPATCTL_CACHE_DIR", None)


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("ray-world"))
    world.linear = fit(world, "linear", kind="linear")
    world.with_side = fit(world, "with-side", side_info=world.side_set, kind="linear")
    return world


@pytest.fixture(scope="module")
def model_path(ray_session, tmp_path_factory) -> Path:
    """An untrained tiny_cnn saved like train-new saves one."""
    import torch

    from compatctl.data import load_data
    from compatctl.data.transforms import compute_normalization
    from compatctl.models import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    data = load_data(DATA, "train")
    model = build_model(ModelSpec("tiny_cnn", embedding_dim=6, num_classes=4)).eval()
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, model, config={"model": {"arch": "tiny_cnn"}},
               normalization=compute_normalization(data.images).to_dict(), lineage={},
               class_names=data.class_names, image_shape=data.image_shape)
    return path


def same_files(one: Path, other: Path) -> None:
    """The two folders hold the same file names with the same bytes (manifest included)."""
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    assert "manifest.json" in names and not [n for n in names if n.startswith("progress.")]
    for name in names:
        assert filecmp.cmp(one / name, other / name, shallow=False), name


def test_embed_on_ray_is_byte_identical(model_path, tmp_path):
    from compatctl.engines.ray_engine import embed_on_ray
    from compatctl.models.embed import embed_dataset

    options = dict(split="all", batch_size=7, shard_rows=16, device="cpu")
    embed_dataset(model_path, DATA, tmp_path / "local", **options)
    seen = []
    out, complete = embed_on_ray(model_path, DATA, tmp_path / "ray", settings=TWO,
                                 progress=lambda *a: seen.append(a), **options)
    assert complete and out == tmp_path / "ray"
    same_files(tmp_path / "local", tmp_path / "ray")
    assert seen[-1] == ("embed", 90, 90)  # progress summed over both workers


@pytest.mark.parametrize("transform, options", [
    pytest.param("linear", dict(budget=0.0), marks=pytest.mark.slow),
    ("linear", dict(budget=0.3, order="random", seed=3, new_embeddings="new_set")),
    pytest.param("with_side", dict(budget=0.5, order="norm", new_embeddings="new_set", side_info_path="side_set"),
                 marks=pytest.mark.slow),
])
def test_backfill_on_ray_is_byte_identical(world, tmp_path, transform, options):
    from compatctl.backfill import backfill
    from compatctl.engines.ray_engine import backfill_on_ray

    options = {k: getattr(world, v) if k in ("new_embeddings", "side_info_path") else v for k, v in options.items()}
    local = backfill(world.gallery, getattr(world, transform), tmp_path / "local", **options)
    summary = backfill_on_ray(world.gallery, getattr(world, transform), tmp_path / "ray", settings=TWO, **options)
    same_files(tmp_path / "local", tmp_path / "ray")
    assert summary["complete"] and summary["engine"] == {"name": "ray", "workers": 2}
    for key in ("rows_written", "backfilled_rows", "new_rows", "shards_written"):
        assert summary[key] == local[key], key


def kill_after_writes(marker: Path, writes: int, part: tuple[int, int]) -> None:
    """In a Ray worker: on the first attempt of part 1, SIGKILL this process after ``writes`` file writes."""
    import compatctl.store.artifacts as artifacts
    import compatctl.store.embeddings as embeddings

    if part[0] != 1 or marker.exists():
        return
    marker.write_text(str(os.getpid()))
    real, count = artifacts.atomic_write_bytes, [0]

    def write(path, data):
        real(path, data)
        count[0] += 1
        if count[0] == writes:
            os.kill(os.getpid(), signal.SIGKILL)

    artifacts.atomic_write_bytes = embeddings.atomic_write_bytes = write


def test_backfill_survives_a_killed_worker(world, tmp_path):
    from compatctl.backfill import backfill
    from compatctl.engines import ray_engine

    options = dict(budget=0.3, order="random", new_embeddings=world.new_set, block_rows=32)
    backfill(world.gallery, world.linear, tmp_path / "local", **options)
    board = ray_engine.ProgressBoard.remote()
    hook = partial(kill_after_writes, tmp_path / "killed", 3)  # progress claim, shard 0, its record: then dies
    parts = ray_engine.run_parts(partial(backfill, str(world.gallery), str(world.linear), str(tmp_path / "ray"),
                                         **options), TWO, workers=2, before_part=hook, board=board)
    assert ray_engine.finish_set(parts)
    same_files(tmp_path / "local", tmp_path / "ray")
    _, attempts = ray.get(board.snapshot.remote())
    assert len(attempts[1]) == 2 and len(attempts[2]) == 1  # part 1 died once and was retried
    assert int((tmp_path / "killed").read_text()) == attempts[1][0]
    assert parts[0][0]["shards_written"] == 2  # the retry skipped the shard the killed worker completed


def test_ray_resumes_what_a_killed_driver_left(world, tmp_path):
    """A driver killed after part 1 of 2 finished: the re-run keeps part 1's shards and completes."""
    from compatctl.backfill import backfill
    from compatctl.engines.ray_engine import backfill_on_ray
    from compatctl.store.embeddings import deferred_manifest

    options = dict(budget=0.3, order="random", new_embeddings=world.new_set)
    backfill(world.gallery, world.linear, tmp_path / "local", **options)
    with deferred_manifest():
        backfill(world.gallery, world.linear, tmp_path / "ray", part=(1, 2), **options)
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("shard-*")}
    summary = backfill_on_ray(world.gallery, world.linear, tmp_path / "ray", settings=TWO, **options)
    assert summary["shards_written"] == 2 and summary["complete"]  # only part 2's shards (1 and 3) were written
    same_files(tmp_path / "local", tmp_path / "ray")
    assert all((tmp_path / "ray" / name).stat().st_mtime_ns == ns for name, ns in kept.items())


def test_bad_input_in_a_worker_is_one_line(runner, world, tmp_path):
    """A library error raised inside the Ray workers reaches the user as one process would print it."""
    result = runner.invoke(app, ["backfill", str(world.gallery), "--transform", str(world.linear), "--out",
                                 str(tmp_path / "new"), "--budget", "0.3", "--order", "uncertainty",
                                 "--new-embeddings", str(world.new_set), "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "--order uncertainty: " in result.output and "has no uncertainty head" in result.output
    assert "Traceback" not in result.output and "RayTaskError" not in result.output


def write_pair(root: Path, seed: int, distance: str, shard_rows: int = 7):
    query, gallery = random_pair(seed, 40, 60, 3, 4, distance, overlap=0.7)
    for name, block in (("q", query), ("g", gallery)):
        write_embedding_set(root / name, block, header={"model_fingerprint": "fp"}, shard_rows=shard_rows)
    return root / "q", root / "g"


@pytest.mark.parametrize("distance, with_map", [("cosine", True), ("l2", False),
                                               pytest.param("l2", True, marks=pytest.mark.slow),
                                               pytest.param("cosine", False, marks=pytest.mark.slow)])
def test_eval_on_ray_matches_one_process(ray_session, tmp_path, distance, with_map):
    from compatctl.engines.ray_eval import evaluate_on_ray
    from compatctl.evaluate import evaluate
    from compatctl.store import open_embeddings

    query, gallery = write_pair(tmp_path, 5, distance)
    options = dict(distance=distance, topk=(1, 2, 5), with_map=with_map, map_at_r=with_map, query_block=9,
                   gallery_block=5)
    local = evaluate(open_embeddings(query), open_embeddings(gallery), **options)
    report = evaluate_on_ray(query, gallery, settings=RaySettings(workers=3), **options)
    assert report["engine"] == {"name": "ray", "workers": 2}  # 3 asked; actors live together: capped at 2 CPUs
    assert report["metrics"].keys() == local["metrics"].keys()
    for name, value in local["metrics"].items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-9), name
    assert report["counts"] == local["counts"]
    assert local["counts"]["left_out_self"] > 0  # leave-one-out happened on both sides


@pytest.mark.slow
def test_cli_embed_on_ray(runner, model_path, tmp_path):
    result = runner.invoke(app, ["embed", str(model_path), DATA, "--out", str(tmp_path / "emb"), "--device", "cpu",
                                 "--shard-rows", "16", "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0 and "wrote embedding set" in result.output, result.output
    assert open_embeddings(tmp_path / "emb").rows == 50


def test_cli_backfill_and_eval_on_ray(runner, world, tmp_path):
    result = runner.invoke(app, ["backfill", str(world.gallery), "--transform", str(world.linear), "--out",
                                 str(tmp_path / "new"), "--budget", "0.3", "--new-embeddings", str(world.new_set),
                                 "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0 and "complete" in result.output, result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "new"), str(tmp_path / "new"), "--engine", "ray",
                                 "--json", str(tmp_path / "r.json"), "--fail-under", "top1=0"])
    assert result.exit_code == 0, result.output
    local = runner.invoke(app, ["eval", str(tmp_path / "new"), str(tmp_path / "new"), "--json",
                                str(tmp_path / "l.json")])
    import json

    ray_report, local_report = (json.loads((tmp_path / n).read_text()) for n in ("r.json", "l.json"))
    assert local.exit_code == 0 and ray_report["metrics"] == local_report["metrics"]


def big_world(root: Path, rows: int = 60_000, dim: int = 16, shard_rows: int = 2048):
    """A gallery of ``rows`` in many shards, its new embeddings, and a linear transform fit on them."""
    from compatctl.store import EmbeddingBlock
    from compatctl.transform import fit_transform, load_transform_config

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 50, rows)
    new = (3 * rng.normal(size=(50, dim))[labels] + rng.normal(size=(rows, dim))).astype(np.float32)
    old = (new @ rng.normal(size=(dim, dim)) / 4 + 0.5 * rng.normal(size=(rows, dim))).astype(np.float32)
    ids = rng.permutation(10 * rows)[:rows].astype(np.int64)
    write_embedding_set(root / "gallery", EmbeddingBlock(old, ids, labels), header={"model_fingerprint": "old"},
                        shard_rows=shard_rows)
    write_embedding_set(root / "new", EmbeddingBlock(new, ids, labels), header={"model_fingerprint": "new"},
                        shard_rows=5000)
    fit_transform(root / "gallery", root / "new", root / "h.safetensors",
                  config=load_transform_config(None, ["kind=linear", "min_matched=10"]))
    return root / "gallery", root / "new", root / "h.safetensors"


@pytest.mark.slow
def test_larger_backfill_and_eval_on_ray(ray_session, tmp_path):
    from compatctl.backfill import backfill
    from compatctl.engines.ray_engine import backfill_on_ray
    from compatctl.engines.ray_eval import evaluate_on_ray
    from compatctl.evaluate import evaluate

    gallery, new, transform = big_world(tmp_path)
    options = dict(budget=0.3, order="norm", new_embeddings=new)
    backfill(gallery, transform, tmp_path / "local", **options)
    backfill_on_ray(gallery, transform, tmp_path / "ray", settings=TWO, **options)
    same_files(tmp_path / "local", tmp_path / "ray")
    queries = tmp_path / "queries"  # 1,500 of the gallery's items, as new-model queries (leave-one-out applies)
    write_embedding_set(queries, next(open_embeddings(new).iter_blocks(1500)), header={"model_fingerprint": "new"})
    for with_map in (True, False):
        settings = dict(topk=(1, 5, 10), with_map=with_map, map_at_r=with_map, query_block=400)
        local = evaluate(open_embeddings(queries), open_embeddings(tmp_path / "ray"), **settings)
        spread = evaluate_on_ray(queries, tmp_path / "ray", settings=TWO, **settings)
        assert local["counts"]["left_out_self"] == 1500 and spread["counts"] == local["counts"]
        for name, value in local["metrics"].items():
            assert spread["metrics"][name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.slow
def test_cli_driver_killed_mid_run_resumes(tmp_path):
    """SIGKILL the whole `backfill --engine ray` command once a few shards are down; the re-run finishes identical."""
    import subprocess
    import sys
    import time

    from compatctl.backfill import backfill

    gallery, new, transform = big_world(tmp_path, rows=200_000, shard_rows=2048)  # 98 shards
    backfill(gallery, transform, tmp_path / "local", budget=0.3, new_embeddings=new)
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "compatctl", "backfill", str(gallery), "--transform", str(transform), "--out",
               str(out), "--budget", "0.3", "--new-embeddings", str(new), "--engine", "ray", "--workers", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob("shard-*.safetensors"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    assert not (out / "manifest.json").exists()  # killed mid-run
    assert 4 <= len(list(out.glob("shard-*.safetensors"))) < 98
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    same_files(tmp_path / "local", out)
