"""Word and character n-gram counts of lyrics, as scikit-learn's vectorizers count them, made
through each document's whitespace tokens.

scikit-learn's ``char_wb`` analyser cuts every word of every document into n-grams in Python:
about 500 lyrics a second here, too slow to serve. Lyrics repeat their words, and the n-grams of
a document are the sum of its words' n-grams, so here each distinct token is cut once, at fit,
into a sparse token x n-gram matrix; a document's counts are its token counts times that matrix.
A token never seen in training is cut when it first appears. The counts equal scikit-learn's
(``CountVectorizer(ngram_range=...)`` for words, ``analyzer="char_wb"`` for characters; the
tests compare them), at several times its speed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class TokenNgrams(TransformerMixin, BaseEstimator):
    """Counts of word n-grams (``word_ngrams``) and character n-grams within word boundaries
    (``char_ngrams``); either may be None. Per analyser, n-grams in fewer than ``min_df``
    documents are dropped and at most ``max_features`` of the most frequent are kept, as
    scikit-learn's vectorizers do."""

    def __init__(
        self,
        word_ngrams: tuple[int, int] | None = (1, 1),
        char_ngrams: tuple[int, int] | None = (2, 5),
        min_df: int = 2,
        max_features: int | None = None,
    ) -> None:
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.max_features = max_features

    def _analysers(self) -> list:
        from sklearn.feature_extraction.text import CountVectorizer

        found = []
        if self.word_ngrams:
            found.append(CountVectorizer(ngram_range=tuple(self.word_ngrams)).build_analyzer())
        if self.char_ngrams:
            found.append(
                CountVectorizer(
                    analyzer="char_wb", ngram_range=tuple(self.char_ngrams), lowercase=False
                ).build_analyzer()
            )
        return found

    def fit(self, docs, y=None):
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import CountVectorizer

        tokens = CountVectorizer(
            tokenizer=str.split, token_pattern=None, lowercase=True, dtype=np.float32
        )
        per_doc = tokens.fit_transform(docs)
        names = tokens.get_feature_names_out()
        matrices, self.vocabularies_ = [], []
        for analyse in self._analysers():
            cut = CountVectorizer(analyzer=analyse, dtype=np.float32)
            token_ngrams = cut.fit_transform(names)
            counts = per_doc @ token_ngrams
            document_frequency = np.asarray((counts > 0).sum(axis=0)).ravel()
            keep = np.flatnonzero(document_frequency >= self.min_df)
            if self.max_features and len(keep) > self.max_features:
                frequency = np.asarray(counts.sum(axis=0)).ravel()[keep]
                keep = np.sort(keep[np.argsort(-frequency, kind="stable")[: self.max_features]])
            matrices.append(token_ngrams[:, keep])
            ngram_names = cut.get_feature_names_out()[keep]
            self.vocabularies_.append({name: i for i, name in enumerate(ngram_names)})
        self.token_index_ = tokens.vocabulary_
        self.token_ngrams_ = sp.hstack(matrices).tocsr()
        self.offsets_ = np.cumsum([0] + [m.shape[1] for m in matrices])[:-1].tolist()
        return self

    def _cut(self, token: str, analysers: list) -> list[int]:
        """The columns of an unseen token's n-grams that are in the vocabulary."""
        columns = []
        for offset, vocabulary, analyse in zip(
            self.offsets_, self.vocabularies_, analysers, strict=True
        ):
            columns += [offset + vocabulary[g] for g in analyse(token) if g in vocabulary]
        return columns

    def transform(self, docs):
        import scipy.sparse as sp

        index, unseen, analysers = self.token_index_, {}, self._analysers()
        indptr, indices, values = [0], [], []
        extra_rows, extra_columns, extra_values = [], [], []
        for row, doc in enumerate(docs):
            for token, count in Counter(doc.lower().split()).items():
                column = index.get(token)
                if column is not None:
                    indices.append(column)
                    values.append(count)
                    continue
                if token not in unseen:
                    unseen[token] = self._cut(token, analysers)
                columns = unseen[token]
                extra_rows += [row] * len(columns)
                extra_columns += columns
                extra_values += [count] * len(columns)
            indptr.append(len(indices))
        shape = (len(indptr) - 1, len(index))
        per_doc = sp.csr_matrix(
            (np.asarray(values, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
            shape=shape,
        )
        counts = per_doc @ self.token_ngrams_
        if extra_rows:
            counts = counts + sp.csr_matrix(
                (np.asarray(extra_values, np.float32), (extra_rows, extra_columns)),
                shape=counts.shape,
            )
        return counts
