"""Errors raised by the library. Only the CLI turns them into exit codes."""


class CompatctlError(Exception):
    """Base class: a problem the user can fix. The message names the file/key/value and the fix."""

    exit_code = 2


class BadInputError(CompatctlError):
    """An input file, path or value is missing, malformed or inconsistent."""


class ConfigError(CompatctlError):
    """A config file or override is invalid. May carry several problems at once."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class IntegrityError(BadInputError):
    """A stored artifact is corrupt (checksum mismatch, truncated, missing shard)."""


class GateFailed(CompatctlError):
    """A --fail-under gate was not met (exit code 1)."""

    exit_code = 1
