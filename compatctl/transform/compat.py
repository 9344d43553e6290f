"""Can this transform be applied to these embeddings? (dims always; model fingerprints unless forced)."""

from __future__ import annotations

from compatctl.errors import BadInputError
from compatctl.transform.artifact import Transform


def check_compatible(transform: Transform, source, *, force: bool = False, side_info_source=None) -> list[str]:
    """Check that ``source`` (and ``side_info_source``) can go through ``transform``.

    A dim mismatch is always an error. A model-fingerprint mismatch is an error unless
    ``force``; then it becomes a warning. When either fingerprint is unknown (embeddings
    brought in from .npz), nothing can be checked and a warning says so.
    Returns warnings (strings) for the caller to show. Raises BadInputError.
    """
    path = getattr(source, "path", "embeddings")
    if source.dim != transform.old_dim:
        raise BadInputError(f"{path} holds {source.dim}-d embeddings but {transform.path} maps "
                            f"{transform.old_dim}-d old embeddings; pass the gallery of the old model it was fit on")
    warnings = _check_fingerprint(transform.old_fingerprint, source, transform.path, force, "old model")
    if transform.side_info_dim and side_info_source is None:
        raise BadInputError(f"{transform.path} was fit with side-info; pass the side-info embeddings of the gallery")
    if side_info_source is not None:
        if not transform.side_info_dim:
            raise BadInputError(f"{transform.path} was fit without side-info; do not pass side-info")
        if side_info_source.dim != transform.side_info_dim:
            raise BadInputError(f"{getattr(side_info_source, 'path', 'side-info')} holds {side_info_source.dim}-d "
                                f"side-info but {transform.path} expects {transform.side_info_dim}-d")
        warnings += _check_fingerprint(transform.side_info_fingerprint, side_info_source, transform.path,
                                       force, "side-info model")
    return warnings


def _check_fingerprint(expected: str | None, source, transform_path: str, force: bool, what: str) -> list[str]:
    found = getattr(source, "model_fingerprint", None)
    path = getattr(source, "path", "embeddings")
    if expected is None or found is None:
        return [f"cannot verify that {path} comes from the {what} {transform_path} was fit on "
                "(no model fingerprint recorded)"]
    if expected == found:
        return []
    message = (f"{path} comes from model {found} but {transform_path} was fit on {what} {expected}")
    if not force:
        raise BadInputError(message + "; pass embeddings of that model, or --force to apply anyway")
    return [message + " (applied anyway: --force)"]
