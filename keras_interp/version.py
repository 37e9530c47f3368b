"""Single source of truth for the keras_interp version."""

__version__ = "0.1.0"
