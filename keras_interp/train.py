"""Moved to `keras_interp.apps.train` (the training driver, issue 13).

This alias keeps `from keras_interp import train` working for now.
"""

import sys

from keras_interp.apps import train as _train

sys.modules[__name__] = _train
