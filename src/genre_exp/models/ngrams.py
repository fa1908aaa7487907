"""Word and character n-gram counts of lyrics, as scikit-learn's vectorizers count them, made
through each document's whitespace tokens.

scikit-learn's ``char_wb`` analyser cuts every word of every document into n-grams in Python:
about 500 lyrics a second here, too slow to serve. Lyrics repeat their words, and the n-grams of
a document are the sum of its words' n-grams, so here each distinct token is cut once, at fit,
into a sparse token x n-gram matrix; a document's counts are its token counts times that matrix.
A token never seen in training is cut when it first appears. Single words are counted the same
way; word n-grams longer than one span tokens, so they are counted by scikit-learn itself. The
counts equal scikit-learn's (``CountVectorizer(ngram_range=...)`` for words,
``analyzer="char_wb"`` for characters; the tests compare them).
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

    def _spanning(self) -> bool:
        """Whether word n-grams longer than one word are asked for (they span tokens)."""
        return bool(self.word_ngrams) and max(self.word_ngrams) > 1

    def _analysers(self) -> list:
        """The analysers counted through tokens: single words (unless counted by scikit-learn
        with longer word n-grams) and characters."""
        from sklearn.feature_extraction.text import CountVectorizer

        found = []
        if self.word_ngrams and not self._spanning():
            found.append(CountVectorizer().build_analyzer())
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
        self.spanning_ = None
        if self._spanning():
            self.spanning_ = CountVectorizer(
                ngram_range=tuple(self.word_ngrams),
                min_df=self.min_df,
                max_features=self.max_features,
                dtype=np.float32,
            ).fit(docs)
            self.vocabularies_.append(self.spanning_.vocabulary_)
        for analyse in self._analysers():
            cut = CountVectorizer(analyzer=analyse, dtype=np.float32)
            token_ngrams = cut.fit_transform(names)
            counts = per_doc @ token_ngrams
            document_frequency = np.asarray((counts > 0).sum(axis=0)).ravel()
            keep = np.flatnonzero(document_frequency >= self.min_df)
            if self.max_features and len(keep) > self.max_features:
                # As scikit-learn limits its features (the same sort, so the same ties win).
                frequency = np.asarray(counts.sum(axis=0)).ravel()[keep]
                keep = np.sort(keep[(-frequency).argsort()[: self.max_features]])
            matrices.append(token_ngrams[:, keep])
            ngram_names = cut.get_feature_names_out()[keep]
            self.vocabularies_.append({name: i for i, name in enumerate(ngram_names)})
        self.token_index_ = tokens.vocabulary_
        self.token_ngrams_ = sp.hstack(matrices).tocsr() if matrices else None
        widths = [len(v) for v in self.vocabularies_]
        # Where each analyser's columns start; spanning word n-grams, if any, come first.
        self.offsets_ = np.cumsum([0, *widths])[:-1].tolist()
        return self

    def _cut(self, token: str, analysers: list) -> list[int]:
        """The columns of an unseen token's n-grams that are in the vocabulary."""
        columns = []
        first = 1 if self.spanning_ is not None else 0
        for offset, vocabulary, analyse in zip(
            self.offsets_[first:], self.vocabularies_[first:], analysers, strict=True
        ):
            columns += [offset + vocabulary[g] for g in analyse(token) if g in vocabulary]
        return columns

    def transform(self, docs):
        import scipy.sparse as sp

        parts = [] if self.spanning_ is None else [self.spanning_.transform(docs)]
        if self.token_ngrams_ is not None:
            parts.append(self._through_tokens(docs))
        return parts[0] if len(parts) == 1 else sp.hstack(parts).tocsr()

    def _through_tokens(self, docs):
        import scipy.sparse as sp

        # Unseen tokens get columns after the known ones, and their n-gram rows under the
        # token x n-gram matrix, so one product counts both.
        index, unseen, analysers = self.token_index_, {}, self._analysers()
        indptr, indices, values = [0], [], []
        for doc in docs:
            for token, count in Counter(doc.lower().split()).items():
                column = index.get(token)
                if column is None:
                    column = unseen.get(token)
                    if column is None:
                        column = unseen[token] = len(index) + len(unseen)
                indices.append(column)
                values.append(count)
            indptr.append(len(indices))
        per_doc = sp.csr_matrix(
            (np.asarray(values, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
            shape=(len(docs), len(index) + len(unseen)),
        )
        token_ngrams = self.token_ngrams_
        if unseen:
            rows, columns = [], []
            for row, token in enumerate(unseen):
                cut = self._cut(token, analysers)
                rows += [row] * len(cut)
                columns += cut
            unseen_ngrams = sp.csr_matrix(
                (np.ones(len(rows), np.float32), (rows, columns)),
                shape=(len(unseen), token_ngrams.shape[1]),
            )
            token_ngrams = sp.vstack([token_ngrams, unseen_ngrams], format="csr")
        return per_doc @ token_ngrams
