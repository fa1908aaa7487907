"""The data layer: one reader for every layout, and the ``genre-exp data`` commands built on it
(download, prepare, report)."""

from genre_exp.data.load import (
    Columns,
    Dataset,
    Split,
    balance,
    default_folders,
    file_digest,
    load_dataset,
    load_split,
    normalise_column,
    read_table,
    resolve_paths,
)

__all__ = [
    "Columns",
    "Dataset",
    "Split",
    "balance",
    "default_folders",
    "file_digest",
    "load_dataset",
    "load_split",
    "normalise_column",
    "read_table",
    "resolve_paths",
]
