"""Errors a user can fix: reported as one line, never as a traceback."""


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GenreExpError(Exception):
    """A problem with the user's input or set-up, told in one line."""


class DataError(GenreExpError):
    """A data file or data setting that cannot be used as it is."""


class TrackingError(GenreExpError):
    """The MLflow tracking store cannot be reached or used."""


class ConfigError(GenreExpError):
    """A setting whose value cannot work (beyond what the schema's types can say)."""
