"""The learning-rate schedules of the training driver (`apps.train`).

`learning_rate(...)` turns a schedule name of `LR_SCHEDULES` into what
`keras.optimizers.SGD` takes: a float (`"constant"`), Keras' `CosineDecay`
(`"cosine"`) or `LogLinearDecay` (`"paper"`, the authors' schedule).
"""

import keras

LR_SCHEDULES = ("constant", "cosine", "paper")
# The authors' single-category schedule: lr falls 10x, log-linearly, over the
# first 10 epochs, then stays (`network_init.m`: logspace(-4, -5, 10)).
PAPER_DECAY_EPOCHS = 10
PAPER_DECAY_FACTOR = 0.1


@keras.saving.register_keras_serializable(package="keras_interp")
class LogLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate falling log-linearly by `factor`, then constant.

    `lr(step) = initial * factor ** min(step / decay_steps, 1)`; with
    `factor=0.1` over 10 epochs this is the authors' `logspace(-4, -5, 10)`
    shape (`network_init.m`).

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: the step from which the rate stays at
            `initial_learning_rate * factor`.
        factor: the total decay factor.
    """

    def __init__(
        self, initial_learning_rate, decay_steps, factor=PAPER_DECAY_FACTOR
    ):
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.factor = float(factor)

    def __call__(self, step):
        progress = keras.ops.minimum(
            keras.ops.cast(step, "float32") / self.decay_steps, 1.0
        )
        return self.initial_learning_rate * keras.ops.power(
            self.factor, progress
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "factor": self.factor,
        }


def learning_rate(schedule, *, initial, epochs, steps_per_epoch):
    """The SGD learning rate (a float or a schedule) of `schedule`.

    Args:
        schedule: a name of `LR_SCHEDULES`: `"constant"`, `"cosine"`
            (cosine decay to 0 over the whole run) or `"paper"` (10x
            log-linear decay over `PAPER_DECAY_EPOCHS` epochs, then
            constant).
        initial: the initial learning rate.
        epochs: the number of epochs of the run.
        steps_per_epoch: the training steps per epoch.
    """
    if schedule == "constant":
        return initial
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial, decay_steps=max(epochs * steps_per_epoch, 1)
        )
    if schedule == "paper":
        return LogLinearDecay(initial, PAPER_DECAY_EPOCHS * steps_per_epoch)
    raise ValueError(
        f"`lr_schedule` must be one of {LR_SCHEDULES}. Received: "
        f"lr_schedule={schedule!r}."
    )
