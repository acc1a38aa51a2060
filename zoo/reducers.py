"""Reducers: how a loss's per-term values become one scalar, as pytorch-metric-learning (PML) composes them.

A loss computes one or more :class:`Terms` (PML's sub-losses: e.g. the positive and negative pairs
of the contrastive loss); each is reduced by the loss's reducer and the results are summed, as
PML's ``MultipleReducers`` does. A term is a tensor of values with a boolean mask of the terms that
exist (a masked tensor instead of a gathered list keeps shapes static), and for the ``"divisor"``
reducer the number to divide the sum by.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class Terms(NamedTuple):
    """Per-term loss values, which of them exist, and (for ``"divisor"``) what the sum is divided by."""

    values: tf.Tensor
    mask: tf.Tensor
    divisor: tf.Tensor | None = None


def _masked_sum(terms: Terms) -> tf.Tensor:
    return tf.reduce_sum(tf.where(terms.mask, terms.values, 0.0))


def _count(mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(mask, tf.float32))


def mean(terms: Terms) -> tf.Tensor:
    """Mean over the existing terms (PML's ``MeanReducer``); 0 without any."""
    return tf.math.divide_no_nan(_masked_sum(terms), _count(terms.mask))


def avg_non_zero(terms: Terms) -> tf.Tensor:
    """Mean over the existing terms with a positive value (PML's ``AvgNonZeroReducer``); 0 without any."""
    return tf.math.divide_no_nan(_masked_sum(terms), _count(terms.mask & (terms.values > 0.0)))


def sum_(terms: Terms) -> tf.Tensor:
    """Sum of the existing terms (PML's ``SumReducer``)."""
    return _masked_sum(terms)


def divisor(terms: Terms) -> tf.Tensor:
    """Sum divided by the loss's own divisor (PML's ``DivisorReducer``: margin loss, ProxyAnchor); 0 for 0."""
    if terms.divisor is None:
        raise ValueError("the 'divisor' reducer needs a loss that states its divisor (margin, proxy-anchor)")
    return tf.math.divide_no_nan(_masked_sum(terms), tf.cast(terms.divisor, tf.float32))


REDUCERS = {"mean": mean, "avg-non-zero": avg_non_zero, "sum": sum_, "divisor": divisor}


def check(name: str) -> str:
    """``name`` if it is a reducer's name, else a ValueError naming the choices."""
    if name not in REDUCERS:
        raise ValueError(f"unknown reduction {name!r}; choose one of {sorted(REDUCERS)}")
    return name


def reduce(name: str, terms: list[Terms]) -> tf.Tensor:
    """Each term reduced by reducer ``name``, summed (float32 scalar)."""
    reducer = REDUCERS[check(name)]
    return tf.add_n([reducer(t) for t in terms])


def reduce_values(name: str, *values: tf.Tensor) -> tf.Tensor:
    """:func:`reduce` of terms whose every entry exists (vectors of per-pair or per-triplet losses)."""
    return reduce(name, [Terms(v, tf.ones_like(v, tf.bool)) for v in values])
