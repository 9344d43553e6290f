"""Where a command's work runs: this process (``local``, the default) or a Ray cluster (``ray``).

This module imports nothing heavy: the CLI checks the engine options here before any work,
and ``compatctl.engines.ray_engine`` (which imports Ray) is imported only for ``--engine ray``.
"""

from __future__ import annotations

import dataclasses
import socket

from compatctl.errors import BadInputError

ENGINES = ("local", "ray")
RAY_INSTALL = 'pip install "compatctl[ray]"'


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """How to run on Ray: the cluster (None: a local one), workers and the resources of each."""

    address: str | None = None
    workers: int | None = None          # None: the cluster's CPUs / cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def ray_settings(engine: str, *, part: str | None, address: str | None, workers: int | None,
                 gpus_per_worker: float) -> RaySettings | None:
    """Check the engine options of a command; RaySettings for ``--engine ray``, None for ``local``.

    Raises BadInputError (before any work) for an unknown engine, Ray options without
    ``--engine ray``, ``--engine ray`` with ``--part``, Ray not installed, or an address
    nothing listens on.
    """
    if engine not in ENGINES:
        raise BadInputError(f"--engine {engine!r}: unknown; use local (this process) or ray")
    ray_only = [flag for flag, value in (("--ray-address", address), ("--workers", workers),
                                         ("--gpus-per-worker", gpus_per_worker or None)) if value is not None]
    if engine == "local":
        if ray_only:
            raise BadInputError(f"{', '.join(ray_only)} need --engine ray")
        return None
    if part not in (None, "1/1"):
        raise BadInputError(f"--part {part} splits the work for a batch system and --engine ray splits it on a "
                            "cluster: use one of them (drop --part to let Ray spread the shards, or drop "
                            "--engine ray to run part I of N here)")
    if workers is not None and workers < 1:
        raise BadInputError(f"--workers {workers}: must be at least 1")
    if gpus_per_worker < 0:
        raise BadInputError(f"--gpus-per-worker {gpus_per_worker}: must be 0 or more")
    require_ray()
    if address:
        check_reachable(address)
    return RaySettings(address=address or None, workers=workers, gpus_per_worker=float(gpus_per_worker))


def require_ray() -> None:
    """BadInputError with the install command when Ray cannot be imported."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise BadInputError(f"--engine ray: Ray is not installed; install it with: {RAY_INSTALL}")


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (``HOST:PORT`` or ``ray://HOST:PORT``); None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    text = address.split("://", 1)[1] if "://" in address else address
    host, _, port = text.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--ray-address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379, the head node's "
                            "GCS port), ray://HOST:10001 or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address nothing answers on, saying where it tried (Ray itself would retry for minutes)."""
    target = split_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise BadInputError(f"--ray-address {address}: no Ray cluster answers at {target[0]}:{target[1]} ({reason}, "
                        f"tried for up to {timeout_s:g} s); start one there with `ray start --head` or fix the "
                        "address")
