"""Evaluation of filter interpretability (paper Section 5.2).

Coordinates: pixel `k` of the network input image covers `[k, k + 1)`; a
feature-map cell `(i, j)` is centred on `receptive_field(...).offset +
(i, j) * stride` in those pixels. Landmarks are `[x, y]` in the same pixels.
"""

from keras_interp.evaluation.feature_maps import feature_map_model
from keras_interp.evaluation.receptive_field import ReceptiveField
from keras_interp.evaluation.receptive_field import receptive_field
