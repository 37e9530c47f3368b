"""Argument checks shared by the data modules (no TensorFlow)."""

import numpy as np


def check_count(name, value, minimum):
    """`value` as an int, or a ValueError naming `name` if not >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: "
            f"{name}={value!r}."
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be >= {minimum}. Received: {name}={value}."
        )
    return int(value)
