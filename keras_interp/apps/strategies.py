"""The `tf.distribute` strategies the training driver (`apps.train`) runs
under, by name."""

import os

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """The `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    `"multi_worker"` needs the `TF_CONFIG` environment variable; under it
    the driver trains with `keras_interp.trainers.DistributedTrainer`.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name != "multi_worker":
        raise ValueError(
            f"`strategy` must be one of {STRATEGIES}. Received: "
            f"strategy={name!r}."
        )
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "`strategy='multi_worker'` needs the TF_CONFIG environment "
            "variable describing the cluster and this worker's task. See "
            "README, 'Scaling out'."
        )
    return tf.distribute.MultiWorkerMirroredStrategy()
