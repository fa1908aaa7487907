"""The subcommands beside the training app (``genre-exp data|predict|promote|compare|runs``),
each an argparse module with ``main(argv)``. They are where MLflow, figures and data meet."""
