"""Model builders on Keras Applications backbones."""

from keras_interp.models.backbones import BACKBONES
from keras_interp.models.backbones import BackbonePreprocessing
from keras_interp.models.backbones import BackboneSpec
from keras_interp.models.backbones import tiny_vgg
from keras_interp.models.builders import CLASSIFIER
from keras_interp.models.builders import PART_CONV
from keras_interp.models.builders import TOP_MASK
from keras_interp.models.builders import PartClassifier
from keras_interp.models.builders import build_part_classifier
