"""Evaluation of filter interpretability (paper Section 5.2).

Coordinates: pixel `k` of the network input image covers `[k, k + 1)`; a
feature-map cell `(i, j)` is centred on `receptive_field(...).offset +
(i, j) * stride` in those pixels. Landmarks are `[x, y]` in the same pixels.
"""

from keras_interp.evaluation.feature_maps import feature_map_model
from keras_interp.evaluation.landmarks import CUB_EVAL_PARTS
from keras_interp.evaluation.landmarks import landmark_ids
from keras_interp.evaluation.location_instability import MIN_IMAGES
from keras_interp.evaluation.location_instability import SHUFFLE_SEED
from keras_interp.evaluation.location_instability import TOP_K
from keras_interp.evaluation.location_instability import location_instability
from keras_interp.evaluation.part_interpretability import activation_thresholds
from keras_interp.evaluation.part_interpretability import (
    collect_part_interpretability,
)
from keras_interp.evaluation.part_interpretability import filter_categories
from keras_interp.evaluation.part_interpretability import part_interpretability
from keras_interp.evaluation.part_interpretability import too_few_cells_reason
from keras_interp.evaluation.peaks import DeadMaps
from keras_interp.evaluation.peaks import Peaks
from keras_interp.evaluation.peaks import collect_peaks
from keras_interp.evaluation.peaks import dead_map_fractions
from keras_interp.evaluation.peaks import peaks_from_maps
from keras_interp.evaluation.receptive_field import ReceptiveField
from keras_interp.evaluation.receptive_field import receptive_field
from keras_interp.evaluation.references import InstabilityReport
from keras_interp.evaluation.references import location_instability_report
from keras_interp.evaluation.references import shuffle_landmarks
from keras_interp.evaluation.visualize import plot_top_images
from keras_interp.evaluation.visualize import upsample_map
