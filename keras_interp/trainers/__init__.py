"""Generic training loops, independent of any dataset or application.

`DistributedTrainer` trains any Keras model (and its `model.losses`, where
the interpretable layers' filter losses live) under any `tf.distribute`
strategy, including `MultiWorkerMirroredStrategy`, where Keras' `fit` does
not work. The CUB training driver that uses it is
`keras_interp.apps.train`.
"""

from keras_interp.trainers.distributed import DistributedTrainer
from keras_interp.trainers.distributed import replica_losses
from keras_interp.trainers.distributed import split_global_batches
