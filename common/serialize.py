"""Keras ``get_config`` written once: a layer's or loss's constructor arguments read back by name.

Every custom layer and loss here keeps each constructor argument on an attribute of the same name,
so its ``get_config`` is the base config plus those attributes (numpy arrays as lists, so the
config is JSON). ``from_config`` is Keras' default: ``cls(**config)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def constructor_config(obj, names: Sequence[str], base: dict | None = None) -> dict:
    """``base`` (e.g. ``super().get_config()``) plus ``{name: obj.<name>}`` for each name."""
    values = {name: getattr(obj, name) for name in names}
    return {**(base or {}), **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in values.items()}}
