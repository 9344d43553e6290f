"""Draw a backfill curve to an image (matplotlib is an optional extra: ``pip install 'compatctl[plot]'``)."""

from __future__ import annotations

import io
from pathlib import Path

from compatctl.errors import BadInputError
from compatctl.store.artifacts import atomic_write_bytes


def require_matplotlib() -> None:
    """Raise BadInputError naming the fix when matplotlib is not installed (check before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInputError("--plot needs matplotlib: install compatctl's 'plot' extra "
                            "(pip install matplotlib), or drop --plot") from None


def plot_curve(report: dict, path: Path) -> None:
    """Write the report's curve (every metric against the backfilled fraction) to ``path``.

    Raises:
        BadInputError: matplotlib is not installed, or the report has no curve.
    """
    curve = report.get("curve")
    if not curve:
        raise BadInputError("--plot draws a backfill curve: add --backfill-with NEW_GALLERY")
    plot_curves({curve["order"]: curve}, path, metrics=tuple(curve["auc"]))


def plot_curves(curves: dict[str, dict], path: Path, metrics: tuple[str, ...] = ("top1", "map")) -> None:
    """Draw backfill curves, one panel per metric and one line per order, to ``path``.

    Args:
        curves: order name -> a report's ``curve`` (fractions, per-metric points, auc).
        path: the image file to write.
        metrics: the metrics to draw, one panel each.
    Raises:
        BadInputError: matplotlib is not installed.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for order, curve in curves.items():
            axis.plot(curve["fractions"], [100 * v for v in curve[metric]], marker="o", ms=3,
                      label=f"{order} (AUC {100 * curve['auc'][metric]:.1f})")
        axis.set_xlabel("fraction of the gallery backfilled")
        axis.set_ylabel(f"{metric} %")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    image = io.BytesIO()  # drawn in memory, then written atomically (a failed write leaves no half image)
    figure.savefig(image, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(Path(path), image.getvalue())
