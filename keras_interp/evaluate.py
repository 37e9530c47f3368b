"""Moved (issue 13): the evaluation report and the evaluation command line.

* `keras_interp.evaluation.report`: `evaluate_dataset`, the report of a
  model on batched datasets (with `training_results`, `format_summary`
  and `write_summary`);
* `keras_interp.apps.evaluate`: `evaluate`, its CUB-format assembly, and
  the command line (`main`, `run`).

This module re-exports their public names, so that
`from keras_interp import evaluate` keeps working, and
`python -m keras_interp.evaluate ...` runs the command line of
`python -m keras_interp.apps.evaluate ...`. New code imports the modules
above.
"""

import sys

from keras_interp.apps.evaluate import USAGE_ERROR
from keras_interp.apps.evaluate import evaluate
from keras_interp.apps.evaluate import main
from keras_interp.apps.evaluate import run
from keras_interp.apps.run_folder import RESULTS_FILE as RESULTS_FILENAME
from keras_interp.evaluation.report import DROP_DEAD_MAPS
from keras_interp.evaluation.report import FIGURE_SELECTION
from keras_interp.evaluation.report import PART_INTERPRETABILITY_MAP
from keras_interp.evaluation.report import SUMMARY_FILENAME
from keras_interp.evaluation.report import conv_layer_names
from keras_interp.evaluation.report import evaluate_dataset
from keras_interp.evaluation.report import format_summary
from keras_interp.evaluation.report import training_results
from keras_interp.evaluation.report import write_summary

__all__ = [
    "DROP_DEAD_MAPS",
    "FIGURE_SELECTION",
    "PART_INTERPRETABILITY_MAP",
    "RESULTS_FILENAME",
    "SUMMARY_FILENAME",
    "USAGE_ERROR",
    "conv_layer_names",
    "evaluate",
    "evaluate_dataset",
    "format_summary",
    "main",
    "run",
    "training_results",
    "write_summary",
]

if __name__ == "__main__":
    sys.exit(main())
