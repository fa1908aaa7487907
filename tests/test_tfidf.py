"""tfidf_linear: n-gram counts equal to scikit-learn's, the estimator, the family through the CLI
and the logged model; balanced validation scores."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import KAGGLE_GENRES, make_lyrics, run_cli, tiny_overrides, tracking_uri
from sklearn.feature_extraction.text import CountVectorizer

from genre_exp.errors import ConfigError
from genre_exp.models import ngrams as ngrams_module
from genre_exp.models.ngrams import TokenNgrams
from genre_exp.models.tfidf_linear import TfidfLinearConfig, build

ODD = ["Don't stop, believin'!", "ÇA VA? ça va...", "tab\there  and\nnewline", "", "x"]
# Unseen text that str.split and scikit-learn treat in their own ways: Unicode whitespace
# (\x1c, \x85, \u3000; not the zero-width space \u200b), a final sigma, words repeating an
# n-gram, one-letter words shorter than the n-grams, a long word.
ODDER = [
    "a\x1cb\x85c\u3000d\xa0e\u200bf  ΟΔΟΣ Σ",
    "lalala la la LA!! abcdefghijklmnopqrstuvwxyz0123456789_long_word",
    " \t\n ",
]
# Lone surrogates (JSON can carry them) are not UTF-8: a batch holding one is split in Python.
SURROGATE = "surrogate \ud800 in\udfffside q"


def corpus(n: int = 60, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [make_lyrics(KAGGLE_GENRES[i % 10], rng, words=30) for i in range(n)]
    return [*texts, *ODD]


def as_sklearn_order(counts, vocabulary: dict, reference: CountVectorizer, offset: int = 0):
    """Our columns reordered as scikit-learn's vocabulary orders its own."""
    order = [offset + vocabulary[name] for name in reference.get_feature_names_out()]
    return counts[:, order].toarray()


@pytest.mark.parametrize(
    ("words", "chars", "min_df", "max_features"),
    [
        ((1, 2), None, 1, None),
        (None, (2, 5), 1, None),
        ((1, 1), (2, 4), 2, 50),
        ((1, 2), (2, 4), 1, None),
    ],
)
def test_counts_equal_scikit_learns_on_seen_and_unseen_text(words, chars, min_df, max_features):
    train, unseen = corpus(), [*corpus(20, seed=9), "zzqx brandnewword ÇA!", "Don't"]
    ngrams = TokenNgrams(words, chars, min_df=min_df, max_features=max_features).fit(train)
    analysers = [(s, a) for s, a in ((words, "word"), (chars, "char_wb")) if s]
    assert len(ngrams.vocabularies_) == len(analysers)
    for (setting, analyser), vocabulary, offset in zip(
        analysers, ngrams.vocabularies_, ngrams.offsets_, strict=True
    ):
        reference = CountVectorizer(
            analyzer=analyser, ngram_range=setting, min_df=min_df, max_features=max_features
        ).fit(train)
        assert set(vocabulary) == set(reference.vocabulary_), analyser
        for texts in (train, unseen):
            ours = as_sklearn_order(ngrams.transform(texts), vocabulary, reference, offset)
            np.testing.assert_array_equal(ours, reference.transform(texts).toarray())


def per_document_product(ngrams: TokenNgrams, words, chars, texts: list[str]) -> list:
    """Each text's counts as its own product: its token counts, tokens in the order they first
    occur, times those tokens' n-gram rows (an unseen token's cut by scikit-learn's analysers).
    This is how TokenNgrams counted before it counted whole batches at once; the order of a
    row's entries is the order TF-IDF and the linear layer add them up in."""
    import scipy.sparse as sp

    analysers = []
    if words:
        analysers.append(CountVectorizer().build_analyzer())
    if chars:
        analysers.append(
            CountVectorizer(analyzer="char_wb", ngram_range=chars, lowercase=False).build_analyzer()
        )
    width = ngrams.token_ngrams_.shape[1]
    rows = []
    for text in texts:
        counts = Counter(text.lower().split())
        token_rows = []
        for token in counts:
            if token in ngrams.token_index_:
                token_rows.append(ngrams.token_ngrams_[ngrams.token_index_[token]])
                continue
            columns = [
                offset + vocabulary[gram]
                for offset, vocabulary, analyse in zip(
                    ngrams.offsets_, ngrams.vocabularies_, analysers, strict=True
                )
                for gram in analyse(token)
                if gram in vocabulary
            ]
            token_rows.append(
                sp.csr_matrix(
                    (np.ones(len(columns), np.float32), ([0] * len(columns), columns)),
                    shape=(1, width),
                )
            )
        if not counts:
            rows.append(sp.csr_matrix((1, width), dtype=np.float32))
            continue
        token_counts = sp.csr_matrix(np.array([list(counts.values())], np.float32))
        rows.append(token_counts @ sp.vstack(token_rows, format="csr"))
    return rows


@pytest.mark.parametrize(("words", "chars"), [((1, 1), (2, 5)), (None, (2, 4)), ((1, 1), None)])
def test_batch_counts_are_each_rows_own_product_entry_for_entry(monkeypatch, words, chars):
    # Blocks of 3 documents, so a batch is counted in several tasks on several threads, and
    # unseen tokens' n-grams looked up in Arrow however few they are.
    monkeypatch.setattr(ngrams_module, "BLOCK", 3)
    monkeypatch.setattr(ngrams_module, "ARROW_LOOKUPS", 0)
    train = corpus()
    texts = [*train[:7], *corpus(12, seed=9), *ODD, *ODDER]
    ngrams = TokenNgrams(words, chars, min_df=1).fit(train)
    for batch in (texts, [SURROGATE, *texts]):
        counts = ngrams.transform(batch)
        assert counts.dtype == np.float32
        expected = per_document_product(ngrams, words, chars, batch)
        for row, (text, reference) in enumerate(zip(batch, expected, strict=True)):
            ours = counts[row]
            assert ours.indices.tolist() == reference.indices.tolist(), text
            assert ours.data.tolist() == reference.data.tolist(), text


def test_batch_probabilities_equal_row_by_row_and_scikit_learns_pipeline(monkeypatch):
    from sklearn.pipeline import FeatureUnion, make_pipeline

    monkeypatch.setattr(ngrams_module, "BLOCK", 4)
    rng = np.random.default_rng(3)
    genres = KAGGLE_GENRES[:3]
    train = [make_lyrics(g, rng) for g in genres for _ in range(20)]
    model = build(TfidfLinearConfig(min_df=1, C=1.0), None, 0)
    model.fit(train, np.repeat(np.arange(3), 20))
    texts = [*corpus(14, seed=5), *ODD, *ODDER]

    batch = model.predict_proba(texts)
    row_by_row = np.concatenate([model.predict_proba([text]) for text in [*texts, SURROGATE]])
    np.testing.assert_array_equal(batch, row_by_row[:-1])
    np.testing.assert_array_equal(model.predict_proba([*texts, SURROGATE]), row_by_row)

    # scikit-learn's own counts, in the same columns, through the same TF-IDF and classifier.
    union = FeatureUnion(
        [
            ("words", CountVectorizer(min_df=1, max_features=200000, dtype=np.float32)),
            (
                "chars",
                CountVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), max_features=200000, dtype=np.float32
                ),
            ),
        ]
    ).fit(train)
    reference = make_pipeline(union, model.named_steps["tfidf"], model.named_steps["linear"])
    vocabularies = [v.vocabulary_ for _, v in union.transformer_list]
    assert model.named_steps["ngrams"].vocabularies_ == vocabularies
    # Equal up to float32 rounding: scikit-learn adds each row's terms in column order.
    np.testing.assert_allclose(
        row_by_row, reference.predict_proba([*texts, SURROGATE]), rtol=1e-5, atol=1e-7
    )


def test_estimator_gives_probabilities_and_learns_genre_words():
    rng = np.random.default_rng(1)
    genres = KAGGLE_GENRES[:3]
    texts = [make_lyrics(g, rng) for g in genres for _ in range(30)]
    labels = np.repeat(np.arange(3), 30)
    for classifier in ("logistic_regression", "linear_svc"):
        model = build(TfidfLinearConfig(classifier=classifier, C=1.0), "balanced", 0)
        model.fit(texts, labels)
        probabilities = model.predict_proba(
            [make_lyrics(g, np.random.default_rng(7)) for g in genres]
        )
        assert probabilities.shape == (3, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
        assert list(probabilities.argmax(axis=1)) == [0, 1, 2], classifier


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"char_ngrams": [5, 2]}, r"model\.char_ngrams=\[5, 2\]: expected \[shortest, longest\]"),
        ({"word_ngrams": [0, 1]}, r"model\.word_ngrams=\[0, 1\]"),
        ({"word_ngrams": [], "char_ngrams": []}, "both empty: no features"),
        ({"C": 0.0}, r"model\.C=0\.0: expected a positive number"),
    ],
)
def test_impossible_settings_are_one_line(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        build(TfidfLinearConfig(**settings), None, 0)
    assert "\n" not in str(error.value)


def test_balanced_validation_scores_weigh_each_genre_the_same():
    from sklearn.utils.class_weight import compute_sample_weight

    from genre_exp.evaluate import evaluate

    # 8 rows of genre 0 all right, 2 rows of genre 1 all wrong (predicted 0).
    truth = np.array([0] * 8 + [1] * 2)
    probabilities = np.tile([0.9, 0.1], (10, 1))
    plain = evaluate(truth, probabilities, ["a", "b"], prefix="val")
    weights = compute_sample_weight("balanced", truth)
    balanced = evaluate(truth, probabilities, ["a", "b"], prefix="val", sample_weight=weights)
    assert plain.metrics["val_accuracy"] == pytest.approx(0.8)
    assert balanced.metrics["val_accuracy"] == pytest.approx(0.5)
    # Genre a: precision 0.8 of rows, 0.5 when both genres weigh the same.
    assert plain.metrics["val_f1_a"] == pytest.approx(2 * 0.8 / 1.8)
    assert balanced.metrics["val_f1_a"] == pytest.approx(2 * 0.5 / 1.5)


@pytest.mark.slow
def test_family_trains_logs_and_serves_through_the_cli(tmp_path, kaggle_csv):
    import mlflow

    lstm_only = ("model.", "data.vocab_size", "data.sequence_length")
    overrides = [
        *(o for o in tiny_overrides(tmp_path, *kaggle_csv) if not o.startswith(lstm_only)),
        "model=tfidf_linear",
        "model.min_df=1",
    ]
    result = run_cli([*overrides, "data.val_weights=balanced", "training.class_weight=balanced"])
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_family"] == "tfidf_linear"
    assert run.data.params["model.char_ngrams"] == "[2, 5]"
    assert run.data.metrics["epochs_trained"] == 1
    (point,) = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert point.step == 0 and point.value == run.data.metrics["final_val_macro_f1"]
    assert run.data.metrics["test_macro_f1"] > 0.5  # each genre has words of its own

    code = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({tracking_uri(tmp_path)!r})
model = mlflow.pyfunc.load_model("runs:/{run.info.run_id}/model")
out = model.predict(pd.DataFrame({{"lyrics": ["metalword metalsound night", "", "é 🎵"]}}))
print(json.dumps({{"columns": list(out.columns), "sums": out.sum(axis=1).tolist(),
                  "top": out.idxmax(axis=1).tolist()}}))
"""
    served = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert served.returncode == 0, served.stderr[-3000:]
    answer = json.loads(served.stdout.strip().splitlines()[-1])
    assert answer["columns"] == KAGGLE_GENRES
    assert answer["sums"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-6)
    assert answer["top"][0] == "Metal"

    resumed = run_cli([*overrides, f"training.resume={run.info.run_id}"])
    assert resumed.returncode == 1
    errors = [line for line in resumed.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "trains in one step" in errors[0]
