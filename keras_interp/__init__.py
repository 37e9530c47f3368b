"""keras_interp: Interpretable CNNs (Zhang, Wu, Zhu, CVPR 2018) for Keras 3."""

from keras_interp import diagnostics
from keras_interp import distribute
from keras_interp import models
from keras_interp.callbacks import FilterLossEpoch
from keras_interp.diagnostics import GradientRatioLogger
from keras_interp.diagnostics import gradient_norms
from keras_interp.diagnostics import gradient_ratio
from keras_interp.layers import InterpretableConv2D
from keras_interp.layers import InterpretableMask
from keras_interp.layers import interpretable_layers
from keras_interp.losses import authors_filter_gradient
from keras_interp.losses import category_mutual_information
from keras_interp.losses import learned_beta_target
from keras_interp.losses import mutual_information
from keras_interp.templates import part_centers
from keras_interp.templates import part_mask
from keras_interp.templates import part_templates
from keras_interp.version import __version__
