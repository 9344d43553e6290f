"""The ``--engine`` options shared by embed, backfill and eval (checked by ``compatctl.engines``)."""

from __future__ import annotations

import typer


def engine_option():
    return typer.Option("local", "--engine", help='Where the work runs: local (this process) or ray (a Ray '
                        'cluster, shards spread over its workers; needs pip install "compatctl[ray]").')


def ray_address_option():
    return typer.Option(None, "--ray-address", help="With --engine ray: the cluster (HOST:PORT of its head, "
                        "ray://HOST:10001 or auto); default: start a local Ray instance.")


def workers_option():
    return typer.Option(None, "--workers", help="With --engine ray: number of Ray workers (default: the "
                        "cluster's CPUs, at most one per shard).")


def gpus_per_worker_option():
    return typer.Option(0.0, "--gpus-per-worker", help="With --engine ray: GPUs each worker reserves (its model "
                        "then runs on CUDA with --device auto).")


def ray_settings_of(engine: str, ray_address, workers, gpus_per_worker, part=None):
    """RaySettings for --engine ray, None for local; BadInputError for unusable options (before any work)."""
    from compatctl.engines import ray_settings

    return ray_settings(engine, part=part, address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker)


def refuse_on_ray(given: dict[str, object]) -> None:
    """``eval --engine ray`` ranks one QUERY against one GALLERY: refuse the options it does not spread."""
    from compatctl.errors import BadInputError

    flags = [flag for flag, value in given.items() if value not in (None, [], False)]
    if flags:
        raise BadInputError(f"{', '.join(flags)}: not available with --engine ray (it computes top-k, mAP and "
                            "mAP@R of one QUERY GALLERY pair); drop --engine ray for them")
