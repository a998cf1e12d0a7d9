"""Class-conditional batch normalization (de Vries et al. 2017; Miyato & Koyama 2018).

    y = BN(x) · gain[label] + bias[label]

BN here has no affine parameters of its own; the per-class gain (initialised to 1) and bias (0) are
tables of num_classes × C. They are deliberately *not* spectrally normalised (as in the reference
implementation): σ of a table initialised to ones is √(num_classes·C), which would shrink every gain.
With num_classes=0 the layer is an ordinary BatchNormalization with its own affine parameters.
"""
import keras
from keras import ops

from sagan_tf.layers.serialization import register

__all__ = ["ConditionalBatchNormalization"]

# PyTorch/BigGAN batch-norm constants (Keras momentum = 1 - PyTorch momentum).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@register
class ConditionalBatchNormalization(keras.layers.Layer):
    """Args:
      num_classes: size of the gain/bias tables; 0 for unconditional BN.
      synchronized: compute batch statistics across all replicas (cross-replica BN).
    Call as `layer(x, labels, training=...)` with int labels of shape [batch].
    """

    def __init__(self, num_classes, synchronized=False, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.synchronized = bool(synchronized)
        self.momentum = momentum
        self.epsilon = epsilon
        conditional = self.num_classes > 0
        self.bn = keras.layers.BatchNormalization(
            momentum=momentum, epsilon=epsilon, center=not conditional, scale=not conditional,
            synchronized=self.synchronized, dtype=self.dtype_policy, name="bn")

    def build(self, input_shape):
        self.bn.build(input_shape)
        if self.num_classes:
            channels = input_shape[-1]
            self.gain = keras.layers.Embedding(self.num_classes, channels, embeddings_initializer="ones",
                                               dtype=self.dtype_policy, name="gain")
            self.bias = keras.layers.Embedding(self.num_classes, channels, embeddings_initializer="zeros",
                                               dtype=self.dtype_policy, name="bias")
            self.gain.build((None,))
            self.bias.build((None,))
        self.built = True

    def call(self, x, labels=None, training=False):
        x = self.bn(x, training=training)
        if not self.num_classes:
            return x
        gain = ops.cast(self.gain(labels), x.dtype)[:, None, None, :]
        bias = ops.cast(self.bias(labels), x.dtype)[:, None, None, :]
        return x * gain + bias

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "synchronized": self.synchronized,
                "momentum": self.momentum, "epsilon": self.epsilon}
