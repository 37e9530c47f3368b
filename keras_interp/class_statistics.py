"""Class statistics of the filters, and the filter-to-class assignment.

Pure, keyword-only `keras.ops` functions for the multi-category form of the
filter loss (Zhang, Wu, Zhu, CVPR 2018, Section 3.1 and Eq. 4): each filter
is assigned to the class whose images activate it the most, and an image is
a positive for the filter (scored against its part templates `T_mu`) only if
it belongs to that class; every other image is a negative (`T-`).

The paper assigns filter `f` to `argmax_c mean_{I in c} sum x_f(I)` over the
whole training set. The layers keep that statistic as a moving average over
the training batches, as the authors' `our_cnn_train.m` does (momentum 0.9;
the authors average each map's spatial maximum, the layers its mean, i.e.
the paper's `sum x` up to the constant map size).
"""

from typing import Any

from keras import ops

from keras_interp import losses

# Authors' `our_cnn_train.m`: the per-class activation EMA uses momentum 0.9.
DEFAULT_MOMENTUM = 0.9


def update_class_statistics(
    class_statistics: Any,
    feature_maps: Any,
    class_ids: Any,
    *,
    momentum: float = DEFAULT_MOMENTUM,
    reduction: Any = None,
):
    """One moving-average step of each filter's mean activation per class.

    With `a_f(I)` the spatial mean of filter `f`'s map on image `I` (the
    paper's `sum x`, Section 3.1, divided by the map size) and `B_c` the
    images of class `c` in the batch:

    ```
    m_{c,f} = mean_{I in B_c} a_f(I)
    S'_{c,f} = momentum * S_{c,f} + (1 - momentum) * m_{c,f}   if S_{c,f} > 0
             = m_{c,f}                                         if S_{c,f} <= 0
    S'_{c,f} = S_{c,f}                           if B_c is empty
    ```

    A class's statistic starts at its first batch mean (the authors start
    the average at the first value) and a class absent from the batch keeps
    its statistic.

    Args:
        class_statistics: `[num_classes, filters]` float, the current `S`
            (zeros before the first batch).
        feature_maps: `[batch, height, width, filters]` non-negative maps,
            channels last.
        class_ids: `[batch]` int class ids. An id outside
            `[0, num_classes)` belongs to no class: its image updates
            nothing.
        momentum: the moving average's momentum, in `[0, 1]`.
        reduction: a `losses.BatchReduction`: what the batch is (the global
            batch under `tf.distribute`). Default: the tensor's own batch.

    Returns:
        `[num_classes, filters]` float32, the new statistics.
    """
    reduction = losses.LOCAL_BATCH if reduction is None else reduction
    statistics = ops.cast(class_statistics, "float32")
    num_classes = statistics.shape[0]
    one_hot = ops.one_hot(class_ids, num_classes, dtype="float32")  # [B, N]
    activation = ops.mean(ops.cast(feature_maps, "float32"), axis=(1, 2))
    counts = reduction.sum(one_hot)[0][:, None]  # [N, 1]
    per_class = one_hot[:, :, None] * activation[:, None, :]  # [B, N, C]
    batch_mean = ops.divide_no_nan(reduction.sum(per_class)[0], counts)
    blended = ops.where(
        statistics > 0,
        momentum * statistics + (1.0 - momentum) * batch_mean,
        batch_mean,
    )
    return ops.where(counts > 0, blended, statistics)


def assign_filters(class_statistics: Any, *, background_class: Any = None):
    """The class each filter is assigned to, `[filters]` int32.

    `c_f = argmax_c S_{c,f}` (paper Section 3.1; Section 5.2.1 for the
    evaluation), over every class but `background_class`, whose images are
    negatives for every filter. A filter whose statistics are all `<= 0`
    (never active on a non-background class, e.g. before the first batch)
    gets -1: it is assigned to no class.

    Args:
        class_statistics: `[num_classes, filters]` float, e.g. the
            statistics of `update_class_statistics` or per-class mean
            activations.
        background_class: optional class id never assigned.

    Returns:
        `[filters]` int32 class ids, -1 for unassigned filters.
    """
    statistics = ops.convert_to_tensor(class_statistics)
    if background_class is not None:
        num_classes = statistics.shape[0]
        is_background = ops.arange(num_classes) == background_class
        statistics = ops.where(is_background[:, None], -1.0, statistics)
    assigned = ops.cast(ops.argmax(statistics, axis=0), "int32")
    seen = ops.max(statistics, axis=0) > 0
    return ops.where(seen, assigned, -1)


def filter_positives(
    class_ids: Any, assignment: Any, *, background_class: Any = None
):
    """Which images are positives for which filter, `[batch, filters]`.

    Image `I` is a positive for filter `f` (scored against the templates
    `T_mu` in Eq. 1 and Eq. 4) if its class is the filter's class `c_f`;
    a filter with no class yet (`c_f = -1`) takes every image as positive.
    Images of `background_class` are negatives for every filter (the
    random images of the paper's single-category tasks).

    Args:
        class_ids: `[batch]` int class ids.
        assignment: `[filters]` int class per filter (`assign_filters`).
        background_class: optional class id of the negatives.

    Returns:
        `[batch, filters]` float32, 1 for a positive, 0 for a negative.
    """
    class_ids = ops.cast(class_ids, "int32")
    assignment = ops.cast(assignment, "int32")
    own = (class_ids[:, None] == assignment[None, :]) | (
        assignment[None, :] < 0
    )
    if background_class is not None:
        own = own & (class_ids != background_class)[:, None]
    return ops.cast(own, "float32")


def authors_class_weights(
    *, num_classes: Any = None, background_class: Any = None
) -> tuple:
    """The authors' weights of the positive and negative gradient terms.

    `our_vl_simplenn.m`: `w+ = 0.5 / rho` and `w- = 0.5 / (1 - rho)`, with
    `rho` the fraction of the training images in the filter's class, so
    that positives and negatives weigh the same in total. For more than 10
    classes the authors set `rho = 1 / classes`; this function always does
    (the layers do not see the dataset's class frequencies), counting the
    classes other than `background_class`. With a single class (the
    paper's single-category tasks) both weights are 1, as in the authors'
    code.

    Args:
        num_classes: number of label classes, or None (no labels: one
            class).
        background_class: optional class id not counted as a class.

    Returns:
        `(w_pos, w_neg)`, two Python floats.
    """
    foreground = num_classes or 1
    if background_class is not None:
        foreground -= 1
    if foreground <= 1:
        return 1.0, 1.0
    rho = 1.0 / foreground
    return 0.5 / rho, 0.5 / (1.0 - rho)
