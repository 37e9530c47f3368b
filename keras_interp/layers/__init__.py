"""Interpretable layers."""

from keras_interp.layers.interpretable_conv2d import InterpretableConv2D
from keras_interp.layers.interpretable_mask import InterpretableMask
from keras_interp.layers.interpretable_mask import InterpretableMixin
