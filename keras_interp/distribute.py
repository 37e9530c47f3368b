"""Exact global-batch filter losses under `tf.distribute`.

The filter loss is not a sum of per-image terms: `Z_T` and `p(x)` are
computed over the whole image set (the batch). Under a `tf.distribute`
strategy with several replicas each replica sees only its share of the
global batch, so the layers reduce those batch statistics across replicas
with `CrossReplicaReduction`, and each replica adds its own images' share of
the global loss. Keras divides every `add_loss` term by the number of
replicas and sums the gradients (`docs/method_notes.md` §6), so the layers
multiply their term by the number of replicas: the summed gradient is then
exactly the gradient of the single-device loss on the global batch.

JAX (`keras.distribution.DataParallel`) runs one SPMD program over the
global batch, so no special handling is needed there.
"""

import keras
from keras import ops

from keras_interp.normalization import BatchReduction


class CrossReplicaReduction(BatchReduction):
    """Batch-axis reductions over the global batch of a `tf.distribute` step.

    Sums go through `ReplicaContext.all_reduce("sum")`, which is
    differentiable; maxima (used only as shifts and branch tests, never
    differentiated) through `all_gather`.

    Args:
        context: the `tf.distribute.ReplicaContext` of the running replica.
    """

    def __init__(self, context):
        self.context = context

    def sum(self, x):
        return self.context.all_reduce("sum", ops.sum(x, axis=0, keepdims=True))

    def max(self, x):
        local = ops.stop_gradient(ops.max(x, axis=0, keepdims=True))
        gathered = self.context.all_gather(local, axis=0)
        return ops.max(gathered, axis=0, keepdims=True)

    def size(self, x):
        local = ops.cast(ops.shape(x)[0], "float32")
        return self.context.all_reduce("sum", local)


def replica_reduction():
    """The reduction for the current context, and the number of replicas.

    Returns `(CrossReplicaReduction, R)` inside a replica of a TensorFlow
    strategy with `R > 1` replicas, `(None, 1)` everywhere else.
    """
    if keras.backend.backend() != "tensorflow":
        return None, 1
    import tensorflow as tf

    if (
        not tf.distribute.has_strategy()
        or tf.distribute.in_cross_replica_context()
    ):
        return None, 1
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    if replicas <= 1:
        return None, 1
    return CrossReplicaReduction(context), replicas
