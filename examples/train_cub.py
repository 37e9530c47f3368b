r"""Train an interpretable CNN on CUB-200-2011 (or the embedded part dataset).

Intentionally thin: the flags are generated from the fields of
`keras_interp.apps.config.TrainConfig` (`keras_interp.apps.train_flags`),
and `keras_interp.apps.train.train_and_evaluate` does the work (and is
tested). The run's config is written to <model_dir>/config.json before
training starts.

    python examples/train_cub.py                      # embedded dataset
    python examples/train_cub.py --embedded_dataset=scenes --nocrop_to_box \
        --image_size=128                              # un-cropped scenes
    python examples/train_cub.py --data_dir=/data/CUB_200_2011 \
        --backbone=vgg16 --weights=/path/vgg16_notop.h5 --image_size=224
    python examples/train_cub.py --beta=learned       # or --beta=4,4,2,...
    python examples/train_cub.py --help               # every flag
    tensorboard --logdir runs/train_cub/logs
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from keras_interp.apps import train  # noqa: E402
from keras_interp.apps import train_flags  # noqa: E402

train_flags.define_flags()
flags.adopt_module_key_flags(train_flags)  # --help lists them.


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = train_flags.config_from_flags()
    except ValueError as error:  # A bad setting: usage, not a traceback.
        raise app.UsageError(str(error)) from None
    train.train_and_evaluate(config)


if __name__ == "__main__":
    app.run(main)
