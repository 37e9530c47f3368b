"""Interpretable layers, and finding them in a model."""

from keras_interp.layers.base_interpretable import InterpretableMixin
from keras_interp.layers.interpretable_conv2d import InterpretableConv2D
from keras_interp.layers.interpretable_mask import InterpretableMask
from keras_interp.layers.search import interpretable_layers
