"""The filter loss's gradient, taken in the forward pass (TensorFlow).

Private to the layers. On TensorFlow with one replica, the layers take the
exact filter loss's gradient inside their compiled forward function
(`value_and_gradient`) and attach it to the loss outside it
(`with_gradient`), so that no intermediate of the loss is kept for the
backward pass. `benchmarks/_prototypes.py` passes other strategies (and
chunk sizes) to the layers to measure what this buys.
"""

from keras import ops

# Filters per group when the layer takes the exact loss's gradient itself
# (TensorFlow): bounds the loss's working memory inside the compiled block.
FILTER_CHUNK = 64


def value_and_gradient(fn, maps, positives, beta, *, filter_chunk=FILTER_CHUNK):
    """`fn(maps, positives, beta)` and its gradient `d/dmaps` (TensorFlow).

    `fn` is a sum of independent per-filter terms (the filter loss; its
    scale `m_f` is per filter too), so it is evaluated `filter_chunk`
    filters at a time (the largest divisor of the number of filters not
    above it), with each group's gradient taken right away. Inside the
    layer's compiled function the loss's `[batch, filters, H*W + 1]`
    intermediates then exist for one group at a time and die there, instead
    of being kept for the backward pass (`benchmarks/README.md`).

    Args:
        fn: the loss, `fn(maps, positives, beta) -> scalar`.
        maps: `[batch, height, width, filters]` float32 maps.
        positives: `[batch, filters]` float32 category membership.
        beta: a scalar, or one beta per filter `[filters]`.
        filter_chunk: positive int, the most filters per group.

    Returns:
        `(value, gradient)`: the scalar loss and its gradient, shaped like
        `maps`.
    """
    import tensorflow as tf

    if isinstance(filter_chunk, bool) or not (
        isinstance(filter_chunk, int) and filter_chunk >= 1
    ):
        raise ValueError(
            "`filter_chunk` must be a positive int (filters per group). "
            f"Received: filter_chunk={filter_chunk!r}."
        )

    def group_value_and_gradient(args):
        maps, positives, beta = args
        with tf.GradientTape() as tape:
            tape.watch(maps)
            value = fn(maps, positives, beta)
        return value, tape.gradient(value, maps)

    _, height, width, filters = maps.shape
    chunk = max(
        d for d in range(1, min(filters, filter_chunk) + 1) if filters % d == 0
    )
    groups = filters // chunk
    if groups == 1:
        return group_value_and_gradient((maps, positives, beta))
    batch = tf.shape(maps)[0]
    grouped_maps = tf.transpose(
        tf.reshape(maps, [batch, height, width, groups, chunk]),
        [3, 0, 1, 2, 4],
    )
    grouped_positives = tf.transpose(
        tf.reshape(positives, [batch, groups, chunk]), [1, 0, 2]
    )
    grouped = (grouped_maps, grouped_positives)
    if tf.is_tensor(beta) and beta.shape.rank > 0:  # One beta per filter.
        grouped += (tf.reshape(beta, [groups, chunk]),)
        group = group_value_and_gradient
    else:  # One beta: the templates stay shared by all filters.

        def group(args):
            return group_value_and_gradient((*args, beta))

    values, gradients = tf.map_fn(
        group, grouped, fn_output_signature=(tf.float32, tf.float32)
    )
    gradient = tf.reshape(
        tf.transpose(gradients, [1, 2, 3, 0, 4]),
        [batch, height, width, filters],
    )
    return tf.reduce_sum(values), gradient


def with_gradient(value, gradient, x):
    """`value`, with `gradient` as its gradient with respect to `x`.

    `stop(value) + s - stop(s)` with `s = sum(stop(gradient) * x)`: the value
    is unchanged (`s - stop(s)` is exactly 0) and `d/dx = gradient`. The
    backward pass keeps only `gradient` (and `x`, which the network keeps
    anyway). Pure `keras.ops` (any backend), no custom-gradient machinery.
    The gradient is a constant of the backward pass: no second derivatives.
    """
    s = ops.sum(ops.stop_gradient(gradient) * ops.cast(x, "float32"))
    return ops.stop_gradient(value) + (s - ops.stop_gradient(s))
