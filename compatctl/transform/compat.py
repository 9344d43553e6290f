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
    warnings = check_fingerprint(getattr(source, "model_fingerprint", None), transform.old_fingerprint,
                                 source=str(path), what="old model", force=force)
    if transform.side_info_dim and side_info_source is None:
        raise BadInputError(f"{transform.path} was fit with side-info; pass the side-info embeddings of the gallery")
    if side_info_source is not None:
        if not transform.side_info_dim:
            raise BadInputError(f"{transform.path} was fit without side-info; do not pass side-info")
        if side_info_source.dim != transform.side_info_dim:
            raise BadInputError(f"{getattr(side_info_source, 'path', 'side-info')} holds {side_info_source.dim}-d "
                                f"side-info but {transform.path} expects {transform.side_info_dim}-d")
        warnings += check_fingerprint(getattr(side_info_source, "model_fingerprint", None),
                                      transform.side_info_fingerprint, force=force, what="side-info model",
                                      source=str(getattr(side_info_source, "path", "side-info")))
    return warnings


def check_fingerprint(found: str | None, expected: str | None, *, source: str, what: str, force: bool) -> list[str]:
    """Do embeddings (or a model) named ``source`` come from the ``what`` the transform was fit on?

    A mismatch raises BadInputError unless ``force`` (then a warning); an unknown fingerprint
    (embeddings brought in from .npz) cannot be checked and gives a warning. Returns warnings.
    """
    if expected is None or found is None:
        return [f"{source}: cannot verify that it comes from the {what} the transform was fit on "
                "(no model fingerprint recorded)"]
    if expected == found:
        return []
    message = f"{source}: model fingerprint {found} differs from the {what} the transform was fit on ({expected})"
    if not force:
        raise BadInputError(message + "; pass that model's embeddings, or --force to apply anyway")
    return [message + " (applied anyway: --force)"]
