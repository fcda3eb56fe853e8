"""Deterministic, seeded train/validation splits: stratified by a key, or by group (no leakage).

Both functions are independent of the order of their input: samples are sorted by ``id`` before the
seeded shuffle, so the same set of samples and the same seed always give the same split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def _check(samples: Sequence, val_fraction: float) -> None:
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], not {val_fraction}")
    seen = set()
    for sample in samples:
        if sample.id in seen:
            raise ValueError(f"sample ids must be unique to split them (id {sample.id!r} appears twice)")
        seen.add(sample.id)


def _largest_remainder(sizes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Integer shares of each size summing to round(total × fraction), each within 1 of exact."""
    exact = sizes * fraction
    shares = np.floor(exact).astype(int)
    missing = int(round(sizes.sum() * fraction)) - int(shares.sum())
    if missing > 0:
        remainders = exact - shares
        # Ties broken by the seeded permutation so no bin is systematically favoured.
        order = rng.permutation(len(sizes))
        ranked = order[np.argsort(-remainders[order], kind="stable")]
        shares[ranked[:missing]] += 1
    return shares


def stratified_split(
    samples: Sequence[T],
    val_fraction: float = 0.1,
    seed: int = 0,
    key: Callable[[T], Hashable] = lambda s: s.count,
) -> tuple[list[T], list[T]]:
    """Split samples so that both parts have the same histogram of ``key`` (spines per image).

    For every stratum (key value) of size n, the validation part gets floor or ceil of
    ``n × val_fraction`` samples (largest-remainder rounding, so the total is
    ``round(N × val_fraction)``); which samples go is drawn with ``seed``.

    Args:
        samples: objects with a unique ``id`` (``Sample`` usually).
        val_fraction: share of the validation part, in [0, 1].
        seed: seed of the draw.
        key: stratum of a sample; default the number of objects (``Sample.count``).

    Returns:
        ``(train, val)`` lists, each in ``id`` order.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1] or duplicate ids.

    Reference: Spines paper, Sec. 2 and Fig. 2 (90/10 split; both parts follow the spines-per-image
    distribution of the whole data set).
    """
    _check(samples, val_fraction)
    rng = np.random.default_rng(seed)
    strata: dict = defaultdict(list)
    for sample in sorted(samples, key=lambda s: str(s.id)):
        strata[key(sample)].append(sample)
    keys = sorted(strata, key=repr)
    shares = _largest_remainder(np.array([len(strata[k]) for k in keys]), val_fraction, rng)
    val_ids = set()
    for k, share in zip(keys, shares, strict=True):
        members = strata[k]
        for i in rng.permutation(len(members))[:share]:
            val_ids.add(members[i].id)
    ordered = sorted(samples, key=lambda s: str(s.id))
    return [s for s in ordered if s.id not in val_ids], [s for s in ordered if s.id in val_ids]


def group_split(
    samples: Sequence[T],
    val_fraction: float = 0.1,
    seed: int = 0,
    group: Callable[[T], Hashable] = lambda s: s.meta["slide"],
) -> tuple[list[T], list[T]]:
    """Split by group (slide, patient...) so that no group has samples in both parts.

    Whole groups are drawn in a seeded order and moved to the validation part until it holds at
    least ``val_fraction`` of the samples (so it may be slightly larger; never empty when
    ``val_fraction > 0`` and there are two or more groups).

    Args:
        samples: objects with a unique ``id``.
        val_fraction: target share of samples in the validation part.
        seed: seed of the group order.
        group: the group of a sample; default ``meta["slide"]``.

    Returns:
        ``(train, val)`` lists, each in ``id`` order.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1] or duplicate ids.
    """
    _check(samples, val_fraction)
    groups: dict = defaultdict(list)
    for sample in samples:
        groups[group(sample)].append(sample)
    names = sorted(groups, key=repr)
    rng = np.random.default_rng(seed)
    target = val_fraction * len(samples)
    val_groups: set = set()
    taken = 0
    for i in rng.permutation(len(names)):
        if taken >= target or len(val_groups) == len(names) - 1 and val_fraction < 1.0:
            break
        val_groups.add(names[i])
        taken += len(groups[names[i]])
    ordered = sorted(samples, key=lambda s: str(s.id))
    return ([s for s in ordered if group(s) not in val_groups], [s for s in ordered if group(s) in val_groups])
