"""The application layer: CUB-format data assembly, the training driver and
the command-line programs built on the library (`keras_interp.layers`,
`keras_interp.models`, `keras_interp.evaluation`, `keras_interp.trainers`).

Nothing in the library imports from here.
"""
