"""Errors a user can fix: reported as one line, never as a traceback."""


class GenreExpError(Exception):
    """A problem with the user's input or set-up, told in one line."""


class DataError(GenreExpError):
    """A data file or data setting that cannot be used as it is."""


class TrackingError(GenreExpError):
    """The MLflow tracking store cannot be reached or used."""


class ConfigError(GenreExpError):
    """A setting whose value cannot work (beyond what the schema's types can say)."""
