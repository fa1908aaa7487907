"""``genre-exp data {download,prepare,report}``: get, prepare and inspect lyrics data."""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_exp.commands import add_tracking_uri, one_line_errors
from genre_exp.config import project_root, tracking_uri
from genre_exp.data.layout import KAGGLE_GENRES


def parser() -> argparse.ArgumentParser:
    root = Path(project_root())
    data_dir = root / "data"
    main = argparse.ArgumentParser(
        prog="genre-exp data",
        description="Get, prepare and inspect lyrics data. Training reads data/processed/ "
        "unless data.train_path/data.test_path or $GENRE_EXP_DATA say otherwise.",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    download = commands.add_parser(
        "download", help="fetch Kaggle's data set with kagglehub into data/raw/"
    )
    download.add_argument(
        "--out",
        type=Path,
        default=data_dir / "raw",
        help="where the raw files go (default: %(default)s)",
    )

    prepare = commands.add_parser(
        "prepare", help="raw CSVs -> data/processed/{train,test}.parquet and summary.json"
    )
    prepare.add_argument(
        "--raw",
        type=Path,
        default=data_dir / "raw",
        help="folder or .zip with train and test .csv/.parquet (default: %(default)s)",
    )
    prepare.add_argument(
        "--out",
        type=Path,
        default=data_dir / "processed",
        help="where the prepared files go (default: %(default)s)",
    )
    prepare.add_argument(
        "--drop-overlap",
        action="store_true",
        help="remove from train the songs that are also in test",
    )
    prepare.add_argument(
        "--genres",
        nargs="+",
        metavar="GENRE",
        default=KAGGLE_GENRES,
        help="keep only rows of these genres; others are dropped and counted, such as "
        "Kaggle's few rows whose genre cell holds a fragment of text (default: Kaggle's 10, "
        f"as training's data.genres: {' '.join(KAGGLE_GENRES)})",
    )

    report = commands.add_parser(
        "report", help="PNG figures of genres, languages and lyric lengths per split"
    )
    report.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with train and test files (default: as training finds it)",
    )
    report.add_argument("--train", type=Path, help="train file (instead of --data)")
    report.add_argument("--test", type=Path, help="test file (instead of --data)")
    report.add_argument(
        "--out",
        type=Path,
        default=root / "outputs" / "data_report",
        help="where the PNG files go (default: %(default)s)",
    )
    report.add_argument("--run-id", help="also log the figures to this MLflow run")
    add_tracking_uri(report, "MLflow store for --run-id")
    return main


def run(args: argparse.Namespace) -> None:
    if args.command == "download":
        from genre_exp.data.download import download

        files = download(args.out)
        print(
            f"downloaded {len(files)} files into {args.out}; next: "
            f"genre-exp data prepare --raw {args.out}"
        )
    elif args.command == "prepare":
        from genre_exp.data.prepare import describe
        from genre_exp.data.prepare import run as prepare

        prepared = prepare(args.raw, args.out, drop_overlap=args.drop_overlap, genres=args.genres)
        print(describe(prepared.summary))
        print(
            f"written: {args.out / 'train.parquet'}, {args.out / 'test.parquet'}, "
            f"{args.out / 'summary.json'}"
        )
    else:
        report(args)


def report(args: argparse.Namespace) -> None:
    """Figures of genres, languages and lyric lengths per split; with ``--run-id`` also logged
    to that MLflow run."""
    from genre_exp.data.files import default_folders, resolve_paths
    from genre_exp.tracking.queries import require_run
    from genre_exp.tracking.record import log_files_to_run

    uri = tracking_uri(args.tracking_uri)
    if args.run_id:
        require_run(uri, args.run_id)  # before any work
    if args.train and args.test:
        train, test, origin = args.train, args.test, "--train/--test"
    else:
        folders = (
            [("--data", args.data)] if args.data else default_folders(Path(project_root()) / "data")
        )
        train, test, origin = resolve_paths(
            str(args.train) if args.train else None,
            str(args.test) if args.test else None,
            folders,
            how_to_point="pass --data FOLDER or --train FILE --test FILE",
        )
    written = write_report({"train": train, "test": test}, args.out)
    print(f"data from {origin}: {train}, {test}")
    print("written: " + ", ".join(str(p) for p in written))
    if args.run_id:
        log_files_to_run(uri, args.run_id, written, "data_report")
        print(f"logged to MLflow run {args.run_id} under data_report/")


def write_report(files: dict[str, Path], out: Path) -> list[Path]:
    """The report's PNG files in ``out``."""
    from genre_exp import plots
    from genre_exp.data.report import counts, load_splits

    table = load_splits(files)
    genres = counts(table, "genre")
    figures = {
        "genre_distribution.png": plots.distribution_figure(genres, "Genres per split"),
        "language_distribution.png": plots.distribution_figure(
            counts(table, "language", top=15), "Languages per split (15 most common)"
        ),
        "lyric_lengths.png": plots.lengths_figure(table, list(genres.index)),
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures.items():
        plots.save(figure, out / name)
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with one_line_errors(f"genre-exp data {args.command}"):
        run(args)
