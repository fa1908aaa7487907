"""The classical reference: TF-IDF over word and character n-grams (scikit-learn's counts,
made fast enough to serve by ``models.ngrams``) and a linear classifier, trained in one step on
raw lyrics. Read beside the neural families, it says whether a network earns its cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from genre_exp.errors import ConfigError
from genre_exp.models import TEXT, ModelConfig, family


class Linear(StrEnum):
    logistic_regression = "logistic_regression"
    linear_svc = "linear_svc"


@dataclass
class TfidfLinearConfig(ModelConfig):
    name: str = "tfidf_linear"
    # Word and character (within word boundaries) n-gram ranges as [shortest, longest]; []
    # leaves that analyser out.
    word_ngrams: list[int] = field(default_factory=lambda: [1, 1])
    char_ngrams: list[int] = field(default_factory=lambda: [2, 5])
    # Terms in fewer documents than this are dropped; at most this many terms per analyser.
    min_df: int = 2
    max_features: int = 200000
    sublinear_tf: bool = True
    classifier: Linear = Linear.logistic_regression
    # Inverse regularisation strength: smaller is simpler.
    C: float = 0.1


def _ngram_range(cfg: TfidfLinearConfig, setting: str) -> tuple[int, int] | None:
    value = list(getattr(cfg, setting))
    if not value:
        return None
    if len(value) != 2 or not 1 <= value[0] <= value[1]:
        raise ConfigError(
            f"model.{setting}={value}: expected [shortest, longest] with 1 <= shortest <= longest"
        )
    return value[0], value[1]


@family("tfidf_linear", TfidfLinearConfig, kind=TEXT)
def build(cfg: TfidfLinearConfig, class_weight: str | None, seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    from genre_exp.models.ngrams import TokenNgrams

    words, chars = _ngram_range(cfg, "word_ngrams"), _ngram_range(cfg, "char_ngrams")
    if words is None and chars is None:
        raise ConfigError("model.word_ngrams and model.char_ngrams are both empty: no features")
    if cfg.C <= 0:
        raise ConfigError(f"model.C={cfg.C}: expected a positive number")
    if str(cfg.classifier) == Linear.linear_svc:
        # LinearSVC gives margins, not probabilities: calibrated on 3 folds of the training rows.
        linear = CalibratedClassifierCV(
            LinearSVC(C=cfg.C, class_weight=class_weight, random_state=seed), cv=3
        )
    else:
        linear = LogisticRegression(
            C=cfg.C, class_weight=class_weight, max_iter=3000, random_state=seed
        )
    ngrams = TokenNgrams(words, chars, min_df=cfg.min_df, max_features=cfg.max_features)
    # One TF-IDF weighting over both analysers' counts, each row scaled to unit length.
    return Pipeline(
        [
            ("ngrams", ngrams),
            ("tfidf", TfidfTransformer(sublinear_tf=cfg.sublinear_tf)),
            ("linear", linear),
        ]
    )
