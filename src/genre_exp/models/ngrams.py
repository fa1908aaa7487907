"""Word and character n-gram counts of lyrics, as scikit-learn's vectorizers count them, made
through each document's whitespace tokens.

scikit-learn's ``char_wb`` analyser cuts every word of every document into n-grams in Python:
about 500 lyrics a second here, too slow to serve. Lyrics repeat their words, and the n-grams of
a document are the sum of its words' n-grams, so here each distinct token is cut once, at fit,
into a sparse token x n-gram matrix; a document's counts are its token counts times that matrix.
Single words are counted the same way; word n-grams longer than one span tokens, so they are
counted by scikit-learn itself. The counts equal scikit-learn's
(``CountVectorizer(ngram_range=...)`` for words, ``analyzer="char_wb"`` for characters; the
tests compare them).

A batch is counted as a whole, with no Python work per token: Arrow splits and numbers its
tokens, the tokens never seen in training are cut once per batch, and the product runs in
blocks of documents on every core. Each row lists its terms in the order the plain
per-document product does, so TF-IDF and the classifier add them up in the same order and give
the same probabilities to the last bit, in a batch or one lyric at a time.
"""

from __future__ import annotations

from itertools import chain, repeat

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

# Documents per task when counting on several cores: small enough that each task's hash table
# of (document, token) pairs stays in cache, large enough that a task's fixed costs are small.
BLOCK = 1024
# From this many n-grams of unseen tokens on, they are looked up in Arrow (see ``_columns``).
ARROW_LOOKUPS = 50_000


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

    def _unseen_ngrams(self, tokens: list[str], width: int):
        """The n-gram rows of tokens not seen in training: their n-grams in the vocabulary."""
        import scipy.sparse as sp

        rows, columns = [], []
        first = 1 if self.spanning_ is not None else 0
        # ``offsets_`` count the spanning word n-grams' columns too; these rows have none.
        offsets = [offset - self.offsets_[first] for offset in self.offsets_[first:]]
        for offset, vocabulary, (grams, lengths) in zip(
            offsets, self.vocabularies_[first:], self._cuts(tokens), strict=True
        ):
            # One lookup pass over every token's n-grams; a row's order does not matter, as
            # the matrix below sorts each row's columns.
            found = _columns(vocabulary, grams)
            known = found >= 0
            rows.append(np.repeat(np.arange(len(tokens)), lengths)[known])
            columns.append(offset + found[known])
        rows, columns = np.concatenate(rows), np.concatenate(columns)
        return sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, columns)), shape=(len(tokens), width)
        )

    def _cuts(self, tokens: list[str]) -> list[tuple[list[str], np.ndarray]]:
        """As ``_analysers`` cut each token, per analyser: all the tokens' n-grams in one list
        and how many each token has. A batch of real lyrics has tens of thousands of unseen
        tokens, and scikit-learn's analysers cost several microseconds a call."""
        from sklearn.feature_extraction.text import CountVectorizer

        found = []
        if self.word_ngrams and not self._spanning():
            # The word analyser without its per-call checks: single words, no stop words.
            words = CountVectorizer()
            preprocess, tokenize = words.build_preprocessor(), words.build_tokenizer()
            cut = [tokenize(preprocess(token)) for token in tokens]
            found.append((list(chain.from_iterable(cut)), np.array([len(g) for g in cut])))
        if self.char_ngrams:
            shortest, longest = self.char_ngrams
            analyse = CountVectorizer(
                analyzer="char_wb", ngram_range=(shortest, longest), lowercase=False
            ).build_analyzer()
            # char_wb cuts each whitespace-separated word on its own, so one call on the
            # tokens joined by spaces gives each token's n-grams in turn.
            grams = analyse(" ".join(tokens))
            lengths = _char_wb_counts(np.array([len(t) for t in tokens]), shortest, longest)
            if lengths.sum() != len(grams):
                # A token scikit-learn's whitespace split cuts further (a character Python's
                # split keeps): each token on its own, as scikit-learn counts it.
                cut = [analyse(token) for token in tokens]
                grams, lengths = list(chain.from_iterable(cut)), np.array([len(g) for g in cut])
            found.append((grams, lengths))
        return found

    def transform(self, docs):
        import scipy.sparse as sp

        parts = [] if self.spanning_ is None else [self.spanning_.transform(docs)]
        if self.token_ngrams_ is not None:
            parts.append(self._through_tokens(docs))
        return parts[0] if len(parts) == 1 else sp.hstack(parts).tocsr()

    def _through_tokens(self, docs):
        import scipy.sparse as sp

        index = self.token_index_
        lowered = [doc.lower() for doc in docs]
        try:
            rows, codes, distinct = _arrow_tokens(lowered)
        except UnicodeEncodeError:
            # Lone surrogates (JSON input may carry them) are not UTF-8, which Arrow needs.
            rows, codes, distinct = _python_tokens(lowered)
        # Lookups and cuts run once per distinct token of the batch, not per occurrence.
        columns = np.fromiter(map(index.get, distinct, repeat(-1)), np.int64, len(distinct))
        known, unseen = np.flatnonzero(columns >= 0), np.flatnonzero(columns < 0)
        # The n-gram rows of the batch's tokens only (copying all of them cost more than
        # counting a short batch): the known tokens' rows, then the unseen tokens' cuts, so
        # one product counts both.
        token_ngrams = self.token_ngrams_[columns[known]]
        if len(unseen):
            unseen_ngrams = self._unseen_ngrams(
                [distinct[k] for k in unseen], token_ngrams.shape[1]
            )
            token_ngrams = sp.vstack([token_ngrams, unseen_ngrams], format="csr")
        # Each code's row in that matrix.
        columns[known], columns[unseen] = np.arange(len(known)), len(known) + np.arange(len(unseen))
        # The rest runs mostly in C without the GIL, a block of documents per task, on every
        # core.
        firsts = range(0, max(len(docs), 1), BLOCK)
        ends = np.searchsorted(rows, [first + BLOCK for first in firsts])
        blocks = [
            (rows[a:b] - first, codes[a:b], min(BLOCK, len(docs) - first))
            for first, a, b in zip(firsts, [0, *ends[:-1]], ends, strict=True)
        ]

        def count(block):
            return _count_block(*block, columns, token_ngrams)

        if len(blocks) == 1:
            return count(blocks[0])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(_cores(), len(blocks))) as pool:
            return sp.vstack(list(pool.map(count, blocks)), format="csr")


def _columns(vocabulary: dict[str, int], grams: list[str]) -> np.ndarray:
    """Each n-gram's column in ``vocabulary``, -1 for none. Many are looked up in Arrow's
    hash table: a Python dict of 100,000s of strings misses the cache on every lookup, several
    times slower, but Arrow's table costs milliseconds to build, more than a few lookups."""
    if len(grams) >= ARROW_LOOKUPS:
        import pyarrow as pa
        import pyarrow.compute as pc

        names = np.empty(len(vocabulary), object)
        names[list(vocabulary.values())] = list(vocabulary)
        pool = pa.system_memory_pool()  # as in _arrow_tokens
        try:
            found = pc.index_in(
                pa.array(grams, pa.large_string(), memory_pool=pool),
                pa.array(names, pa.large_string(), memory_pool=pool),
                memory_pool=pool,
            )
        except UnicodeEncodeError:
            pass  # lone surrogates, not UTF-8: looked up in Python
        else:
            return found.fill_null(-1).to_numpy().astype(np.int64)
    return np.fromiter(map(vocabulary.get, grams, repeat(-1)), np.int64, len(grams))


def _count_block(rows, codes, documents: int, columns: np.ndarray, token_ngrams):
    """The n-gram counts of ``documents`` documents from their tokens' rows (from 0) and
    codes; ``columns`` maps codes to rows of ``token_ngrams``."""
    import pandas as pd
    import scipy.sparse as sp

    # Each document's distinct tokens in the order they first occur in it (pandas keeps
    # first appearances in order). The product lists a row's n-grams in an order that
    # follows its tokens' order, and TF-IDF and the linear layer add up a row's terms in
    # that order: any other order would move probabilities by rounding.
    width = max(len(columns), 1)
    pairs, firsts = pd.factorize(rows * width + codes)
    per_row = np.bincount(firsts // width, minlength=documents)
    per_doc = sp.csr_matrix(
        (
            np.bincount(pairs, minlength=len(firsts)).astype(np.float32),
            columns[firsts % width],
            np.concatenate([[0], np.cumsum(per_row)]),
        ),
        shape=(documents, token_ngrams.shape[0]),
    )
    return per_doc @ token_ngrams


def _cores() -> int:
    """The cores this process may run on."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _char_wb_counts(lengths: np.ndarray, shortest: int, longest: int) -> np.ndarray:
    """How many char_wb n-grams scikit-learn cuts from words of these lengths: a word padded
    with a space either side gives ``len - n + 1`` n-grams of each length n shorter than it;
    the first n as long or longer gives the padded word once and ends the cut."""
    padded = lengths + 2
    counts = np.zeros_like(padded)
    ended = np.zeros(len(padded), bool)
    for n in range(shortest, longest + 1):
        counts += np.where(ended, 0, np.where(n < padded, padded - n + 1, 1))
        ended |= n >= padded
    return counts


def _arrow_tokens(lowered: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``str.split``'s tokens of the texts: each token's text (its row) and code, and the
    distinct tokens by code. Made in C: a Python string per token cost more than the rest of
    the counting."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # Arrow's own allocator keeps what it frees (about 100 MB at 10,000 lyrics); malloc's
    # hands it on to the counting that follows.
    pool = pa.system_memory_pool()
    text = pa.array(lowered, pa.large_string(), memory_pool=pool)
    split = pc.utf8_split_whitespace(text, memory_pool=pool)
    tokens, rows = pc.list_flatten(split), pc.list_parent_indices(split, memory_pool=pool)
    # Arrow splits at the characters str.split splits at (those str.isspace calls whitespace),
    # but at each one: runs of whitespace leave empty strings, which str.split drops.
    words = pc.not_equal(tokens, "", memory_pool=pool)
    tokens, rows = (
        pc.filter(tokens, words, memory_pool=pool),
        pc.filter(rows, words, memory_pool=pool),
    )
    encoded = pc.dictionary_encode(tokens, memory_pool=pool)
    return rows.to_numpy(), encoded.indices.to_numpy(), encoded.dictionary.to_pylist()


def _python_tokens(lowered: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """As ``_arrow_tokens``, for any text."""
    import pandas as pd

    split = [text.split() for text in lowered]
    lengths = [len(tokens) for tokens in split]
    tokens = np.fromiter(chain.from_iterable(split), object, sum(lengths))
    codes, distinct = pd.factorize(tokens)
    return np.repeat(np.arange(len(split)), lengths), codes, distinct.tolist()
