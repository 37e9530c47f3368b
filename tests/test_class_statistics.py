"""Class statistics, filter-to-class assignment and the authors' weights.

Each pure function of `keras_interp.class_statistics` against values worked
out by hand, and evaluation's assignment, which shares it.
"""

import numpy as np
import pytest
from keras import ops

from keras_interp import class_statistics
from keras_interp import evaluation

# Per-image, per-filter spatial means of the maps below; ids 0, 0, 2, 2.
MEANS = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0], [4.0, 2.0]])
IDS = np.array([0, 0, 2, 2], "int32")
# Spatial pattern with mean 1: the statistic is the spatial mean.
PATTERN = np.array([[2.0, 0.0], [1.0, 1.0]])
MAPS = (MEANS[:, None, None, :] * PATTERN[None, :, :, None]).astype("float32")
# Class 0 unseen, class 1 absent from the batch, class 2 half seen.
STATS = np.array([[0.0, 0.0], [0.3, 0.7], [1.0, 0.0]], "float32")

# Filters 0-4 over classes 0-2: filter 2 never active, filter 3 tied
# between classes 1 and 2, filter 4 active on class 0 only.
ASSIGN_STATS = np.array(
    [
        [0.0, 5.0, 0.0, 0.0, 7.0],
        [2.0, 1.0, 0.0, 3.0, 0.0],
        [1.0, 4.0, 0.0, 3.0, 0.0],
    ]
)


def numpy(x):
    return ops.convert_to_numpy(x)


def test_update_class_statistics_by_hand():
    new = class_statistics.update_class_statistics(
        STATS, MAPS, IDS, momentum=0.5
    )
    # Class 0: first seen, takes its batch mean (2, 1). Class 1: absent,
    # kept. Class 2: batch mean (3, 3); filter 0 blends 0.5 * 1 + 0.5 * 3,
    # filter 1 had no statistic and takes 3.
    expected = [[2.0, 1.0], [0.3, 0.7], [2.0, 3.0]]
    np.testing.assert_allclose(numpy(new), expected, rtol=1e-6)


def test_update_class_statistics_default_momentum_is_the_authors():
    assert class_statistics.DEFAULT_MOMENTUM == 0.9
    new = class_statistics.update_class_statistics(STATS, MAPS, IDS)
    np.testing.assert_allclose(
        numpy(new)[2], [0.9 * 1.0 + 0.1 * 3.0, 3.0], rtol=1e-6
    )


def test_assign_filters_by_hand():
    assigned = class_statistics.assign_filters(ASSIGN_STATS)
    np.testing.assert_array_equal(numpy(assigned), [1, 0, -1, 1, 0])
    assert numpy(assigned).dtype == np.int32


def test_assign_filters_never_picks_the_background_class():
    assigned = class_statistics.assign_filters(ASSIGN_STATS, background_class=0)
    # Filter 1 moves to its best other class; filter 4, active on the
    # background only, is unassigned.
    np.testing.assert_array_equal(numpy(assigned), [1, 2, -1, 1, -1])


@pytest.mark.parametrize(
    "background_class,expected",
    [
        (None, [[0, 0, 1], [1, 0, 1], [0, 1, 1]]),
        (0, [[0, 0, 0], [1, 0, 1], [0, 1, 1]]),
    ],
)
def test_filter_positives_by_hand(background_class, expected):
    positives = class_statistics.filter_positives(
        np.array([0, 1, 2]),
        np.array([1, 2, -1], "int32"),
        background_class=background_class,
    )
    np.testing.assert_array_equal(numpy(positives), expected)
    assert numpy(positives).dtype == np.float32


@pytest.mark.parametrize(
    "num_classes,background_class,expected",
    [
        (None, None, (1.0, 1.0)),  # no labels: single category
        (2, 0, (1.0, 1.0)),  # one class and the background
        (3, None, (1.5, 0.75)),  # rho = 1/3
        (5, 0, (2.0, 2.0 / 3.0)),  # rho = 1/4: the background not counted
    ],
)
def test_authors_class_weights(num_classes, background_class, expected):
    weights = class_statistics.authors_class_weights(
        num_classes=num_classes, background_class=background_class
    )
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_evaluation_categories_keep_argmax_for_filters_never_active():
    # Evaluation assigns by the class means (paper Section 5.2.1) through
    # `assign_filters` but, unlike the layers, gives a filter with no
    # positive mean the argmax category (the first on a tie), not -1.
    labels = np.array([7, 3, 3, 7, 7])
    sums = np.array(
        [
            [1.0, 0.0, -3.0],
            [2.0, 0.0, -2.0],
            [2.0, 0.0, -2.0],
            [3.0, 0.0, -1.0],
            [3.0, 0.0, 0.0],
        ]
    )
    # Means (category 3, category 7): filter 0: (2, 7/3) -> 7; filter 1:
    # never active, (0, 0) -> 3; filter 2: (-2, -4/3) -> 7.
    categories = evaluation.filter_categories(labels, sums)
    np.testing.assert_array_equal(categories, [7, 3, 7])
