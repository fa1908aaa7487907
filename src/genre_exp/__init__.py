"""genre-exp: config-driven lyrics-genre classification experiments."""

__version__ = "0.1.0"
