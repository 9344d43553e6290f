"""Draw a backfill curve to an image (matplotlib is an optional extra: ``pip install 'compatctl[plot]'``)."""

from __future__ import annotations

from pathlib import Path

from compatctl.errors import BadInputError


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
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report.get("curve")
    if not curve:
        raise BadInputError("--plot draws a backfill curve: add --backfill-with NEW_GALLERY")
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, auc in curve["auc"].items():
        axis.plot(curve["fractions"], [100 * v for v in curve[name]], marker="o", ms=3,
                  label=f"{name} (AUC {100 * auc:.1f})")
    axis.set_xlabel(f"fraction of gallery backfilled ({curve['order']} order)")
    axis.set_ylabel("%")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
