"""The fast data path: the cleaned data set and the token ids cached on disk (``genre_exp.cache``:
hits, every invalidation, atomic writes against a concurrent writer, corrupt entries, resume,
a sweep), and training fed from ``tf.data`` with length-bucketed batches."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import KAGGLE_GENRES, make_lyrics, run_cli, tiny_overrides, tracking_uri

from genre_exp.cache import Cache

DATA_HIT = "data from the cache"
DATA_MISS = "data read and cleaned, cached as"
TOKENS_HIT = "token ids from the cache"
TOKENS_MISS = "token ids computed, cached as"
UNREADABLE = "is unreadable"


def entries(root: Path, kind: str) -> list[Path]:
    return sorted((root / "outputs" / "cache").glob(f"{kind}-*.pkl"))


def compose(root: Path, train: Path, test: Path, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genre_exp.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir())):
            return hydra_compose(
                "config", overrides=[*tiny_overrides(root, train, test), *overrides]
            )
    finally:
        GlobalHydra.instance().clear()


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "genre_exp"]


def load(cfg, caplog):
    """``pipeline.load_data`` as a job runs it, with what it logged."""
    from genre_exp.pipeline import load_data, locate_data

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genre_exp"):
        dataset = load_data(cfg, locate_data(cfg))
    return dataset, messages(caplog)


def vectorised(cfg, dataset, caplog, start=None, folder: Path | None = None):
    """``fitting.vectorised`` as a fresh job (or ``start``) runs it, with what it logged."""
    from genre_exp.fitting import vectorised as vectorise
    from genre_exp.resume import Start

    start = start or Start(run_id=None, checkpoint_dir=folder or Path(cfg.paths.root_dir) / "ck")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genre_exp"):
        vectorizer, splits = vectorise(cfg, start, dataset, 1)
    return vectorizer, splits, messages(caplog)


def has(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


# --- hits and misses through the CLI ----------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_reads_the_data_and_token_ids_from_the_cache(tmp_path, kaggle_csv):
    import mlflow

    # Length-bucketed batches too: the logged model of a classifier of any input length.
    overrides = [*tiny_overrides(tmp_path, *kaggle_csv), "training.bucket_by_length=true"]
    first = run_cli(overrides)
    assert first.returncode == 0, first.stderr[-3000:]
    assert has(first.stderr.splitlines(), DATA_MISS) == 1
    assert has(first.stderr.splitlines(), TOKENS_MISS) == 1
    (data_entry,), (tokens_entry,) = entries(tmp_path, "data"), entries(tmp_path, "tokens")
    cache = Cache(data_entry.parent)

    # What the second run reads is altered where the files cannot have put it: a drop count
    # (the lyrics, and so the token ids' key, stay as they are) and a vocabulary token.
    data_key = data_entry.stem.removeprefix("data-")
    fields = cache.read("data", data_key)
    assert fields["dropped"]["train_empty_lyrics"] == 0
    fields["dropped"]["train_empty_lyrics"] = 4321
    cache.write("data", data_key, fields)
    tokens_key = tokens_entry.stem.removeprefix("tokens-")
    tokens = cache.tokens(tokens_key)
    first_vocabulary = json.loads(
        next((tmp_path / "outputs").rglob("checkpoint/vocabulary.json")).read_text()
    )
    assert tokens.vocabulary == first_vocabulary
    cache.put_tokens(tokens_key, type(tokens)(tokens.ids, [*tokens.vocabulary, "cachemarker"]))

    second = run_cli(overrides)
    assert second.returncode == 0, second.stderr[-3000:]
    lines = second.stderr.splitlines()
    assert has(lines, f"{DATA_HIT}: {data_entry}") == 1 and has(lines, DATA_MISS) == 0
    assert has(lines, f"{TOKENS_HIT}: {tokens_entry}") == 1 and has(lines, TOKENS_MISS) == 0
    assert "'train_empty_lyrics': 4321" in second.stderr
    assert entries(tmp_path, "data") == [data_entry]
    assert entries(tmp_path, "tokens") == [tokens_entry]

    # The logged model maps lyrics with the vocabulary the cached ids were made with, so it
    # predicts what the classifier predicts on those ids.
    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tests")
    latest = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    text_model = (
        mlflow.pyfunc.load_model(f"runs:/{latest.info.run_id}/model").unwrap_python_model().model
    )
    vectorizer = text_model.get_layer("vectorizer")
    assert vectorizer.get_vocabulary()[-1] == "cachemarker"
    classifier = text_model.layers[-1]
    assert classifier.inputs[0].shape[1] is None
    assert "one length only" not in first.stderr + second.stderr
    dataset = cache.dataset(data_key, lambda: pytest.fail("the entry is there"))[0]
    from genre_exp.serving import probabilities

    np.testing.assert_allclose(
        probabilities(text_model, dataset.texts("test")),
        classifier.predict(tokens.ids["test"], verbose=0),
        atol=1e-5,
    )


# --- invalidation (in-process, the job's own functions) --------------------------------------


@pytest.mark.parametrize(
    "change",
    ["train_file_byte", "data.seed=7", "data.balance=undersample", "data.max_train_rows=100"],
)
def test_a_changed_file_or_data_setting_never_reuses_the_cache(
    tmp_path, kaggle_csv, caplog, change
):
    train, test = kaggle_csv
    cfg = compose(tmp_path, train, test)
    before, lines = load(cfg, caplog)
    assert has(lines, DATA_MISS) == 1
    lines = vectorised(cfg, before, caplog)[2]
    assert has(lines, TOKENS_MISS) == 1
    again, lines = load(cfg, caplog)
    assert has(lines, DATA_HIT) == 1
    assert again.texts("train") == before.texts("train")
    assert has(vectorised(cfg, again, caplog)[2], TOKENS_HIT) == 1

    if change == "train_file_byte":
        text = train.read_text()
        first = before.texts("train")[0]
        # One letter of one lyric (same size): only the digest tells the files apart.
        at = text.index(first) + first.index(" ") - 1
        train.write_text(text[:at] + ("X" if text[at] != "X" else "Y") + text[at + 1 :])
        cfg = compose(tmp_path, train, test)
    else:
        cfg = compose(tmp_path, train, test, change)
    after, lines = load(cfg, caplog)
    assert has(lines, DATA_MISS) == 1 and has(lines, DATA_HIT) == 0
    assert len(entries(tmp_path, "data")) == 2
    if change == "train_file_byte":
        assert sorted(after.texts("train") + after.texts("val")) != sorted(
            before.texts("train") + before.texts("val")
        )
    # The lyrics changed, so the token ids cannot be the ones cached before.
    lines = vectorised(cfg, after, caplog)[2]
    assert has(lines, TOKENS_MISS) == 1 and has(lines, TOKENS_HIT) == 0
    assert len(entries(tmp_path, "tokens")) == 2


@pytest.mark.parametrize(
    ("change", "vocabulary"),
    [
        ("data.vocab_size=30", 30),
        ("data.sequence_length=10", None),
        ("data.standardize=lower", None),
    ],
)
def test_a_changed_vectoriser_setting_recomputes_the_token_ids_only(
    tmp_path, kaggle_csv, caplog, change, vocabulary
):
    cfg = compose(tmp_path, *kaggle_csv)
    dataset, _ = load(cfg, caplog)
    _, before, _ = vectorised(cfg, dataset, caplog)

    cfg = compose(tmp_path, *kaggle_csv, change)
    dataset, lines = load(cfg, caplog)
    # The cleaned data set does not depend on the vectoriser: it still comes from the cache.
    assert has(lines, DATA_HIT) == 1
    vectorizer, after, lines = vectorised(cfg, dataset, caplog)
    assert has(lines, TOKENS_MISS) == 1 and has(lines, TOKENS_HIT) == 0
    assert len(entries(tmp_path, "tokens")) == 2
    assert after.ids["test"].shape[1] == cfg.data.sequence_length
    if vocabulary:
        assert after.vocab_size == vocabulary < before.vocab_size
    assert vectorizer.get_vocabulary() == after.vocabulary


def test_data_cache_false_neither_reads_nor_writes(tmp_path, kaggle_csv, caplog):
    cfg = compose(tmp_path, *kaggle_csv, "data.cache=false")
    for _ in range(2):
        dataset, lines = load(cfg, caplog)
        assert has(lines, "data read and cleaned (data.cache=false)") == 1
        _, _, lines = vectorised(cfg, dataset, caplog)
        assert has(lines, "token ids computed (data.cache=false)") == 1
    assert not (tmp_path / "outputs" / "cache").exists()


# --- corrupt entries, concurrent writers -----------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "one_byte", "empty", "not_a_pickle"])
def test_a_corrupt_entry_is_rebuilt_with_one_warning(tmp_path, kaggle_csv, caplog, damage):
    cfg = compose(tmp_path, *kaggle_csv)
    built, _ = load(cfg, caplog)
    _, splits, _ = vectorised(cfg, built, caplog)
    for entry in (*entries(tmp_path, "data"), *entries(tmp_path, "tokens")):
        raw = entry.read_bytes()
        if damage == "truncated":
            raw = raw[: len(raw) // 2]
        elif damage == "one_byte":
            raw = raw[:-100] + bytes([raw[-100] ^ 1]) + raw[-99:]
        elif damage == "empty":
            raw = b""
        else:  # whole, by its digest, but not what a job wrote
            raw = hashlib.sha256(b"not a pickle").hexdigest().encode() + b"\nnot a pickle"
        entry.write_bytes(raw)

    rebuilt, lines = load(cfg, caplog)
    assert has(lines, UNREADABLE) == 1 and has(lines, DATA_MISS) == 1
    assert [r.levelname for r in caplog.records if UNREADABLE in r.getMessage()] == ["WARNING"]
    assert rebuilt.texts("train") == built.texts("train")
    _, again, lines = vectorised(cfg, rebuilt, caplog)
    assert has(lines, UNREADABLE) == 1 and has(lines, TOKENS_MISS) == 1
    np.testing.assert_array_equal(again.ids["test"], splits.ids["test"])

    # Rebuilt whole: the next job reads it without a word.
    _, lines = load(cfg, caplog)
    assert has(lines, DATA_HIT) == 1 and has(lines, UNREADABLE) == 0
    assert has(vectorised(cfg, rebuilt, caplog)[2], TOKENS_HIT) == 1


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from genre_exp.cache import Cache

folder, me, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
value = {"ids": {"train": np.full(1_000_000, me, dtype=np.int32)}, "vocabulary": [str(me)]}
for _ in range(25):
    Cache(folder).write("tokens", "samekey", value)
"""


def test_two_processes_writing_one_key_leave_a_whole_entry_readers_never_see_a_part(
    tmp_path, caplog
):
    folder, go = tmp_path / "cache", tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(me), str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in (1, 2)
    ]
    time.sleep(1.0)  # both started and waiting
    go.touch()
    cache, seen = Cache(folder), set()
    with caplog.at_level(logging.WARNING, logger="genre_exp"):
        while any(w.poll() is None for w in writers):
            tokens = cache.tokens("samekey")
            if tokens is not None:
                (me,) = set(np.unique(tokens.ids["train"]).tolist())
                assert tokens.vocabulary == [str(me)] and len(tokens.ids["train"]) == 1_000_000
                seen.add(me)
    for writer in writers:
        errors = writer.stderr.read()
        assert writer.wait() == 0 and not errors, errors
    assert not [r for r in caplog.records if r.name == "genre_exp"], messages(caplog)
    assert seen, "the reader never saw an entry"
    final = cache.tokens("samekey")
    assert final is not None and final.vocabulary in (["1"], ["2"])
    # Each writer's temporary file was renamed into place: none is left behind.
    assert [p.name for p in folder.iterdir()] == ["tokens-samekey.pkl"]


def test_an_unwritable_cache_folder_is_a_warning_not_an_error(tmp_path, kaggle_csv, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    cfg = compose(tmp_path, *kaggle_csv, f"paths.cache_dir={blocked}")
    dataset, lines = load(cfg, caplog)
    assert len(dataset.test) and has(lines, "cannot write the cache entry") == 1


# --- resume -----------------------------------------------------------------------------------


def test_a_resumed_run_keeps_its_own_vocabulary_whatever_the_cache_holds(
    tmp_path, kaggle_csv, caplog
):
    from genre_exp import checkpoint
    from genre_exp.resume import Start
    from genre_exp.vectorize import vectorize, vectorizer_from_vocabulary

    cfg = compose(tmp_path, *kaggle_csv)
    dataset, _ = load(cfg, caplog)
    _, cached, _ = vectorised(cfg, dataset, caplog, folder=tmp_path / "first")

    def resumed(vocabulary):
        saved = checkpoint.Checkpoint(epoch=1, model_path=tmp_path / "m", vocabulary=vocabulary)
        return Start(run_id="killed", checkpoint_dir=tmp_path / "first", saved=saved)

    _, same, lines = vectorised(cfg, dataset, caplog, start=resumed(cached.vocabulary))
    assert has(lines, TOKENS_HIT) == 1
    np.testing.assert_array_equal(same.ids["train"], cached.ids["train"])

    # A killed run whose vocabulary is not the cache's (another order of equal counts, say).
    other = [*cached.vocabulary[:2], *reversed(cached.vocabulary[2:])]
    vectorizer, own, lines = vectorised(cfg, dataset, caplog, start=resumed(other))
    assert has(lines, TOKENS_HIT) == 0 and has(lines, "the resumed run's vocabulary") == 1
    assert vectorizer.get_vocabulary() == other == own.vocabulary
    expected = vectorize(
        vectorizer_from_vocabulary(other, cfg.data.vocab_size, cfg.data.sequence_length),
        dataset.texts("val"),
    )
    np.testing.assert_array_equal(own.ids["val"], expected)
    # The cache still holds the fresh run's ids.
    (entry,) = entries(tmp_path, "tokens")
    key = entry.stem.removeprefix("tokens-")
    assert Cache(cfg.paths.cache_dir).tokens(key).vocabulary == cached.vocabulary


def test_a_cached_vocabulary_is_saved_for_a_later_resume(tmp_path, kaggle_csv, caplog):
    cfg = compose(tmp_path, *kaggle_csv)
    dataset, _ = load(cfg, caplog)
    _, fresh, _ = vectorised(cfg, dataset, caplog, folder=tmp_path / "first" / "checkpoint")
    _, hit, lines = vectorised(cfg, dataset, caplog, folder=tmp_path / "second" / "checkpoint")
    assert has(lines, TOKENS_HIT) == 1
    saved = json.loads((tmp_path / "second" / "checkpoint" / "vocabulary.json").read_text())
    assert saved == hit.vocabulary == fresh.vocabulary


# --- a sweep ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_sharing_a_data_config_reads_and_vectorises_once(tmp_path, kaggle_csv):
    result = run_cli(
        [
            "-m",
            *tiny_overrides(tmp_path, *kaggle_csv),
            "model.embedding_dim=4,8",
            "training.epochs=1",
            "mlflow.log_model=false",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert (has(lines, DATA_MISS), has(lines, DATA_HIT)) == (1, 1), lines
    assert (has(lines, TOKENS_MISS), has(lines, TOKENS_HIT)) == (1, 1), lines
    assert len(entries(tmp_path, "data")) == len(entries(tmp_path, "tokens")) == 1


# --- tf.data batches and length buckets -------------------------------------------------------


def ragged_ids(rows: int = 300, longest: int = 40, seed: int = 0) -> np.ndarray:
    """Token ids padded at the end to ``longest``, lengths from 1 to ``longest``."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, longest), dtype=np.int32)
    for row, length in enumerate(rng.integers(1, longest + 1, size=rows)):
        ids[row, :length] = rng.integers(1, 50, size=length)
    return ids


def epoch_of(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_length_buckets_pad_each_batch_to_its_longest_lyric_and_keep_every_row():
    from genre_exp.train import lengths, training_batches

    ids = ragged_ids()
    labels = np.arange(len(ids))
    dataset = training_batches(ids, labels, batch_size=16, seed=3, by_length=True)
    first, second = epoch_of(dataset), epoch_of(dataset)
    for epoch in (first, second):
        assert len(epoch) == int(dataset.cardinality())
        rows = np.concatenate([y for _, y in epoch])
        assert sorted(rows.tolist()) == labels.tolist()  # every row once
        for x, y in epoch:
            assert x.shape[1] == lengths(ids[y]).max()
            np.testing.assert_array_equal(x, ids[y, : x.shape[1]])
    # Padded to about the batch's own length, not to the longest lyric of all.
    widths = [x.shape[1] for x, _ in first]
    assert np.mean(widths) < 0.75 * ids.shape[1], widths
    # A new order each epoch, the same orders for the same seed.
    assert [y.tolist() for _, y in first] != [y.tolist() for _, y in second]
    again = epoch_of(training_batches(ids, labels, batch_size=16, seed=3, by_length=True))
    assert [y.tolist() for _, y in again] == [y.tolist() for _, y in first]


def test_without_buckets_batches_keep_the_fixed_length_and_are_shuffled_by_the_seed():
    from genre_exp.train import training_batches

    ids = ragged_ids(rows=50)
    labels = np.arange(len(ids))
    epoch = epoch_of(training_batches(ids, labels, batch_size=16, seed=3))
    assert [x.shape for x, _ in epoch] == [(16, 40)] * 3 + [(2, 40)]
    order = np.concatenate([y for _, y in epoch])
    assert sorted(order.tolist()) == labels.tolist() and order.tolist() != labels.tolist()


def bucket_training(seed: int = 7):
    return SimpleNamespace(
        seed=seed,
        optimizer="adam",
        learning_rate=0.01,
        early_stopping=SimpleNamespace(enabled=False),
        reduce_lr=SimpleNamespace(enabled=False),
        epochs=3,
        batch_size=8,
        class_weight="balanced",
        verbose=0,
    )


def texts_and_labels():
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for label, genre in enumerate(KAGGLE_GENRES[:3]):
        for k in range(24):
            texts.append(make_lyrics(genre, rng, words=4 + 3 * k))
            labels.append(label)
    return texts, np.array(labels)


def test_bucketed_training_is_deterministic_and_its_raw_lyrics_model_predicts_the_same():
    from genre_exp.models import export_model
    from genre_exp.train import accepts_any_length, fit, predict, seed_everything
    from genre_exp.vectorize import build_vectorizer, to_strings, vectorize

    texts, labels = texts_and_labels()
    vectorizer = build_vectorizer(texts, vocab_size=60, sequence_length=80)
    ids = vectorize(vectorizer, texts)
    weights = np.linspace(0.5, 1.5, len(ids)) / 3

    def once():
        seed_everything(7)
        model = lstm_with(any_length=True)
        history = fit(
            model, ids, labels, ids[::2], labels[::2], 3, bucket_training(),
            val_weights=weights[::2], by_length=True,
        )  # fmt: skip
        return model, history.history

    (model, history), (_, again) = once(), once()
    assert accepts_any_length(model)
    assert history == again
    assert set(history) >= {"loss", "val_loss", "val_macro_f1"}
    assert len(history["val_macro_f1"]) == 3

    # Predicted in length order, handed back in the rows' order, as the full-length batches do.
    bucketed = predict(model, ids, batch_size=16, by_length=True)
    np.testing.assert_allclose(bucketed, model.predict(ids, verbose=0), atol=1e-5)
    served = export_model(vectorizer, model).predict(to_strings(texts), verbose=0)
    np.testing.assert_allclose(served, bucketed, atol=1e-5)


def lstm_with(any_length: bool):
    from genre_exp.models import Inputs, build_classifier
    from genre_exp.models.lstm import LstmConfig

    return build_classifier(
        LstmConfig(embedding_dim=4, lstm_units=4), Inputs(60, 80, 3, any_length=any_length)
    )


def test_a_family_takes_any_length_only_when_bucketing_asks_for_it():
    from genre_exp.train import accepts_any_length

    assert not accepts_any_length(lstm_with(any_length=False))
    assert lstm_with(any_length=False).inputs[0].shape[1] == 80
    assert accepts_any_length(lstm_with(any_length=True))
