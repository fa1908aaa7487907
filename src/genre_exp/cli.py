"""``genre-exp`` (also ``python -m genre_exp``): dispatch to a subcommand, or run the Hydra app
(``genre_exp.app``) with the arguments as overrides."""

from __future__ import annotations

import importlib
import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN, CPU features, missing CUDA) is not the user's
# concern. TensorFlow 2.21 writes much of it through absl, which ignores this variable: the
# training app filters those lines out of stderr (genre_exp.console) unless the user sets it
# to 0 or 1 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# MLflow's artifact progress bars and INFO lines (table creation, input-example checks) are
# noise in a training log; its warnings still show.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

# Subcommands beside the Hydra app, each an argparse module with its own main(argv).
COMMANDS = {
    "data": "genre_exp.commands.data",
    "predict": "genre_exp.commands.predict",
    "promote": "genre_exp.commands.promote",
    "compare": "genre_exp.commands.compare",
    "runs": "genre_exp.commands.runs",
}


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])
        return
    from genre_exp import arguments

    args = arguments.hydra_args(sys.argv[1:])
    if args is not None:
        problem = arguments.refused(args.overrides, COMMANDS) or arguments.conflicting_modes(args)
        if problem:
            print(f"genre-exp: {problem}", file=sys.stderr)
            sys.exit(2)
        if not (args.help or args.hydra_help or args.cfg or args.info or args.shell_completion):
            from genre_exp.console import hide_native_logs

            hide_native_logs()
    from genre_exp.app import task

    try:
        task()
    except KeyboardInterrupt as exc:
        print(
            f"genre-exp: interrupted ({str(exc) or 'Ctrl-C'}); the MLflow run is marked KILLED",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
