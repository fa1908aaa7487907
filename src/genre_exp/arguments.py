"""What the command line may hold before the Hydra app reads it: checked with Hydra's own
argument parser, so that a word Hydra cannot parse, or a ``+`` that would add a misspelt key to
a schema group, is one line instead of a traceback or a silently added setting."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterable


def hydra_args(argv: list[str]) -> argparse.Namespace | None:
    """The arguments as the Hydra app will read them (its own parser, so options that take a
    value are known), or None when that parser stops (``--version``, a bad option): Hydra
    then answers itself."""
    from hydra._internal.utils import get_args_parser

    silent = io.StringIO()
    try:
        with contextlib.redirect_stdout(silent), contextlib.redirect_stderr(silent):
            return get_args_parser().parse_intermixed_args(argv)
    except SystemExit:
        return None


def refused(overrides: list[str], commands: Iterable[str]) -> str | None:
    """Why Hydra must not get these overrides, in one line; None if it may.

    A word without ``=`` (``genre-exp train``) is no override: Hydra's answer would be a
    traceback. ``+``/``++`` would add a key the schema does not have to a schema group
    (a misspelling, silently added), so only ``tags``, config group choices and ``hydra.*``
    take them."""
    from genre_exp.config import SCHEMA_GROUPS

    for text in overrides:
        if "=" not in text and not text.startswith("~"):
            if text in commands:
                return f"'{text}' is a command: put it first (genre-exp {text} --help)"
            return (
                f"'{text}' is not a command or an override; commands: {', '.join(commands)}; "
                "settings are key=value (genre-exp --help)"
            )
        if text.startswith("+"):
            key = added_key(text)
            if key and "." in key and key.split(".")[0] in SCHEMA_GROUPS:
                plus = "++" if text.startswith("++") else "+"
                return (
                    f"{text}: '{plus}' adds a setting, but the schema fixes the "
                    f"{key.split('.')[0]} settings; drop the '{plus}' to set {key} "
                    "(genre-exp --cfg job shows the settings there are)"
                )
    return None


def conflicting_modes(args: argparse.Namespace) -> str | None:
    """Hydra raises (a traceback) when given more than one of these; ``--help`` wins over them."""
    modes = [args.run, args.multirun, args.cfg is not None, args.info is not None]
    if args.help or args.hydra_help or sum(modes) + args.shell_completion <= 1:
        return None
    return "only one of --run, --multirun, --cfg, --info and --shell-completion at a time"


def added_key(text: str) -> str | None:
    """The key a ``+``/``++`` override adds; None for a config group choice (``+group=option``,
    ``+group@package=option``) or what Hydra's grammar rejects (Hydra says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(text)
    except HydraException:
        return None
    return None if override.package is not None else override.key_or_group
