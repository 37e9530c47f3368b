"""A training loop that runs under any `tf.distribute` strategy.

Keras 3 `fit` works under the default strategy and `MirroredStrategy`, but
fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585;
`docs/method_notes.md` §6). `DistributedTrainer` is a small custom loop with the
same contract as far as is reasonable: it adds the model's own losses
(`model.losses`, where the filter losses live), updates metrics, drives
Keras callbacks (`on_train_begin`, `on_epoch_*`, `on_train_batch_*`) with a
logs dict, returns a `keras.callbacks.History`, and writes checkpoints it
can resume from.

The loss is the mean over the *global* batch, exactly like `fit`: each
replica's per-example losses are summed and divided by the global batch
size, and the model's own losses are divided by the number of replicas (the
interpretable layers already multiply their global-share term by it, see
`keras_interp.distribute`). Gradients are summed across replicas by the
Keras optimizer.

TensorFlow backend only. The CUB training driver built on it is
`keras_interp.apps.train`.
"""

import os

import keras

from keras_interp.layers import interpretable_layers


def _tf():
    import tensorflow as tf

    return tf


def replica_losses(model):
    """`model.losses` of the running replica only.

    Under `MirroredStrategy` the replica threads interleave at every
    cross-replica all-reduce, including the ones inside the interpretable
    layers, so a layer's shared loss list can also hold the tensors another
    replica added. Each replica's ops live on its own device; keep those.
    """
    tf = _tf()
    device = tf.zeros(()).device
    return [loss for loss in model.losses if loss.device == device]


def split_global_batches(dataset, strategy):
    """Distributes a dataset of *global* batches over the replicas.

    Step `k` of every replica, taken together, is exactly global batch `k`
    of `dataset`, in order: each input pipeline (worker) takes its
    contiguous slice of each global batch and hands consecutive pieces to
    its replicas. This makes a multi-worker run see the same batches as a
    single-device run, which tests and resumption rely on.

    Args:
        dataset: a `tf.data.Dataset` of `(x, y)` with a fixed global batch
            size divisible by `strategy.num_replicas_in_sync`.
        strategy: a `tf.distribute.Strategy`.

    Returns:
        A distributed dataset.
    """
    tf = _tf()
    batch = dataset.element_spec[1].shape[0]
    replicas = strategy.num_replicas_in_sync
    if batch is None or batch % replicas:
        raise ValueError(
            "`dataset` must have a static global batch size divisible by "
            f"the {replicas} replicas (use drop_remainder=True). Received "
            f"batch size {batch}."
        )

    def dataset_fn(context):
        pipelines = context.num_input_pipelines
        per_pipeline = batch // pipelines
        start = context.input_pipeline_id * per_pipeline
        per_replica = context.get_per_replica_batch_size(batch)

        def take(*element):
            return tf.nest.map_structure(
                lambda t: t[start : start + per_pipeline], element
            )

        local = dataset.map(take)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        local = local.with_options(options)
        return local.unbatch().batch(per_replica, drop_remainder=True)

    return strategy.distribute_datasets_from_function(dataset_fn)


class DistributedTrainer:
    """Trains a Keras model with a custom loop under any tf.distribute strategy.

    Build the model, the optimizer and the metrics inside `strategy.scope()`
    (as for `fit`). Feed a `tf.data.Dataset` of `(x, y)` global batches.

    Args:
        model: a `keras.Model`.
        optimizer: a `keras.optimizers.Optimizer`.
        loss: a `keras.losses.Loss` instance or name; its reduction is
            replaced by a global-batch mean.
        metrics: list of `keras.metrics.Metric` instances updated with
            `(y, predictions)`.
        strategy: a `tf.distribute.Strategy`; default: the current one.

    Example:

    >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ... # doctest: +SKIP
    >>> with strategy.scope():
    ...     model = build(); optimizer = keras.optimizers.SGD(0.01)
    >>> trainer = DistributedTrainer(model, optimizer, "mse", strategy=strategy)
    >>> history = trainer.fit(dataset, epochs=3, checkpoint_dir="/tmp/ckpt")
    """

    def __init__(self, model, optimizer, loss, metrics=(), strategy=None):
        tf = _tf()
        self.model = model
        self.optimizer = optimizer
        loss = keras.losses.get(loss)
        if isinstance(loss, keras.losses.Loss):
            config = {**loss.get_config(), "reduction": None}
            loss = type(loss).from_config(config)
        self.loss = loss
        self.metrics = list(metrics)
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.loss_tracker = keras.metrics.Mean(name="loss")
        self._step = None

    def _tracked_metrics(self):
        trackers = [
            layer.filter_loss_tracker
            for layer in interpretable_layers(self.model)
            if layer.filter_loss_tracker is not None
        ]
        return [self.loss_tracker] + self.metrics + trackers

    def _make_step(self, global_batch):
        tf = _tf()
        replicas = self.strategy.num_replicas_in_sync

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                predictions = self.model(x, training=True)
                per_example = self.loss(y, predictions)
                loss = tf.reduce_sum(per_example) / global_batch
                own_losses = replica_losses(self.model)
                if own_losses:
                    loss += tf.add_n(own_losses) / replicas
            variables = self.model.trainable_variables
            gradients = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
            self.loss_tracker.update_state(loss * replicas)
            for metric in self.metrics:
                metric.update_state(y, predictions)

        @tf.function
        def step(iterator):
            x, y = next(iterator)
            self.strategy.run(replica_step, args=(x, y))

        return step

    def _logs(self):
        logs = {}
        for metric in self._tracked_metrics():
            result = metric.result()
            if isinstance(result, dict):
                logs.update({k: float(v) for k, v in result.items()})
            else:
                logs[metric.name] = float(result)
        return logs

    def _checkpoint(self, checkpoint_dir):
        """A checkpoint of model, optimizer and epoch; workers write to temp."""
        tf = _tf()
        with self.strategy.scope():
            self._epoch = tf.Variable(0, dtype="int64", trainable=False)
        checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self._epoch
        )
        resolver = getattr(self.strategy, "cluster_resolver", None)
        is_chief = True
        if resolver is not None and resolver.task_type not in (None, "chief"):
            is_chief = resolver.task_type == "worker" and resolver.task_id == 0
        directory = checkpoint_dir
        if not is_chief:
            # Every worker must save (collective ops); only the chief keeps it.
            directory = os.path.join(
                checkpoint_dir, f".worker_{resolver.task_id}_tmp"
            )
        manager = tf.train.CheckpointManager(checkpoint, directory, 2)
        return checkpoint, manager, is_chief

    def fit(
        self,
        dataset,
        *,
        epochs,
        steps_per_epoch=None,
        callbacks=None,
        checkpoint_dir=None,
        verbose=1,
    ):
        """Trains for `epochs` epochs and returns a `keras.callbacks.History`.

        Args:
            dataset: `tf.data.Dataset` of `(x, y)` global batches, iterated
                once per epoch (or for `steps_per_epoch` steps); or a
                function `epoch -> Dataset` giving each epoch its own data
                (deterministic per epoch, so a resumed run is identical).
            epochs: int, the total number of epochs.
            steps_per_epoch: int or None (one pass over `dataset`).
            callbacks: list of `keras.callbacks.Callback`.
            checkpoint_dir: if given, a checkpoint is written after every
                epoch, and training resumes from the latest one there.
            verbose: 0 (silent) or 1 (a progress bar).
        """
        tf = _tf()
        epoch_data = dataset if callable(dataset) else (lambda epoch: dataset)
        first = epoch_data(0)
        global_batch = first.element_spec[1].shape[0]
        if steps_per_epoch is None:
            steps_per_epoch = int(first.cardinality())
            if steps_per_epoch < 0:
                raise ValueError(
                    "`steps_per_epoch` is required for a dataset of unknown "
                    "or infinite cardinality."
                )
        history = keras.callbacks.History()
        callbacks = keras.callbacks.CallbackList(
            list(callbacks or []) + [history],
            add_history=False,
            add_progbar=verbose > 0,
            model=self.model,
            epochs=epochs,
            steps=steps_per_epoch,
            verbose=verbose,
        )
        initial_epoch = 0
        manager = None
        if checkpoint_dir:
            checkpoint, manager, is_chief = self._checkpoint(checkpoint_dir)
            if manager.latest_checkpoint:
                checkpoint.restore(manager.latest_checkpoint)
                initial_epoch = int(self._epoch.numpy())
        step = self._make_step(global_batch)
        callbacks.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            for metric in self._tracked_metrics():
                metric.reset_state()
            callbacks.on_epoch_begin(epoch)
            distributed = split_global_batches(epoch_data(epoch), self.strategy)
            iterator = iter(distributed)
            for batch in range(steps_per_epoch):
                callbacks.on_train_batch_begin(batch)
                step(iterator)
                callbacks.on_train_batch_end(batch, self._logs())
            logs = self._logs()
            # Callbacks first, as `BackupAndRestore` under `fit`: one that
            # raises (`StopOnNonFinite` on diverged weights) leaves the
            # previous epoch's checkpoint in place.
            callbacks.on_epoch_end(epoch, logs)
            if manager is not None:
                self._epoch.assign(epoch + 1)
                manager.save()
                if not is_chief:
                    tf.io.gfile.rmtree(manager.directory)
        callbacks.on_train_end(logs)
        return history
