"""Spectral normalization (Miyato et al. 2018) as SAGAN uses it.

The wrapped layer's kernel W is never modified. Each forward pass uses W_SN = W / σ(W), where σ is
estimated by power iteration on a persistent, non-trainable, float32 vector `u`:

    W_mat = reshape(W, [-1, n])          # n = output features (last axis of the kernel)
    repeat power_iterations times:       # only when training=True
        v = normalize(W_mat u);  u = normalize(W_matᵀ v)
    σ = ‖W_mat u‖                         # u held constant (stop-gradient)

so ∂σ/∂W = v uᵀ with v = normalize(W_mat u): the gradient flows through σ, not through u or v.
Inference computes σ from the stored `u` without advancing it, so an inference call right after a
training call sees exactly the σ that training used.

SAGAN runs one power iteration per training step. A network called in training mode more than once
per step (the generator: once to make the D step's fakes, once in its own update) advances `u` only
in the call that matters and runs the others under :func:`power_iteration_paused`, which keeps
training mode for everything else (batch norm) but reuses the stored `u`.

Under a mixed precision policy the master kernel stays float32 and σ is computed in float32; only
the normalised kernel is cast to the compute dtype for the matmul/convolution.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import keras
from keras import ops

from sagan_tf.layers.serialization import register

__all__ = ["SpectralNormalization", "power_iteration_paused"]

_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


_STATE = threading.local()


def _l2_normalize(x, epsilon):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), epsilon)


@contextlib.contextmanager
def power_iteration_paused() -> Iterator[None]:
    """Training-mode calls of every SpectralNormalization inside this context (as run, or as traced
    into a tf.function) compute σ from the stored `u` and leave it unchanged, as inference does."""
    previous = getattr(_STATE, "paused", False)
    _STATE.paused = True
    try:
        yield
    finally:
        _STATE.paused = previous


def _power_iteration_paused():
    return getattr(_STATE, "paused", False)


@register
class SpectralNormalization(keras.layers.Wrapper):
    """Wraps a `Dense`, `Conv1D/2D/3D` or `Embedding` layer so that it uses its kernel divided by σ(kernel).

    Args:
      layer: the layer to wrap (not yet built, or built).
      power_iterations: power-iteration steps per training-mode call (SAGAN: 1).
      epsilon: floor for vector norms in the power iteration.
    """

    def __init__(self, layer, power_iterations=1, epsilon=1e-12, **kwargs):
        kwargs["autocast"] = False  # read the float32 master kernel, cast explicitly below
        super().__init__(layer, **kwargs)
        if not isinstance(layer, (keras.layers.Dense, keras.layers.Embedding) + _CONV_TYPES):
            raise ValueError(
                f"SpectralNormalization wraps Dense, Conv1D/2D/3D or Embedding layers; got "
                f"{type(layer).__name__} ({layer.name!r}).")
        if isinstance(layer, _CONV_TYPES) and layer.groups != 1:
            raise ValueError(f"SpectralNormalization does not support grouped convolutions "
                             f"(layer {layer.name!r} has groups={layer.groups}).")
        if int(power_iterations) < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations}.")
        self.power_iterations = int(power_iterations)
        self.epsilon = float(epsilon)
        self._is_embedding = isinstance(layer, keras.layers.Embedding)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self.kernel
        self.u = self.add_weight(
            name="sn_u", shape=(kernel.shape[-1],), dtype="float32",
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
            trainable=False, autocast=False,
            # Every replica computes the same u from the same kernel; taking the first replica's
            # value keeps the copies bit-identical under tf.distribute.
            aggregation="only_first_replica")
        self.built = True

    @property
    def kernel(self):
        """The wrapped layer's stored (un-normalised) weight variable."""
        return self.layer.embeddings if self._is_embedding else self.layer.kernel

    def normalized_kernel(self, training=False):
        """Returns (W / σ, σ, u) in float32; `u` is the advanced vector when training. Its ops (and their
        gradients) are named under ``power_iteration/``, so a profile can tell them from the layer's own."""
        with keras.name_scope("power_iteration"):
            w = ops.cast(self.kernel, "float32")
            w_mat = ops.reshape(w, (-1, w.shape[-1]))
            u = ops.convert_to_tensor(self.u)
            if training:
                for _ in range(self.power_iterations):
                    v = _l2_normalize(ops.matmul(w_mat, u[:, None])[:, 0], self.epsilon)
                    u = _l2_normalize(ops.matmul(v[None, :], w_mat)[0], self.epsilon)
            else:  # a no-op once training has stored a unit u; the initial draw is not unit length
                u = _l2_normalize(u, self.epsilon)
            u = ops.stop_gradient(u)
            sigma = ops.sqrt(ops.sum(ops.square(ops.matmul(w_mat, u[:, None]))))
            return w / ops.maximum(sigma, self.epsilon), sigma, u

    def kernel_for_call(self, training=False):
        """W / σ (float32) for one forward pass, advancing `u` as `call` does. For callers that apply the
        kernel in another form (sagan_tf.layers.resample_conv); they add `self.layer.bias` themselves."""
        advance = bool(training) and not _power_iteration_paused()
        w_sn, _, u = self.normalized_kernel(training=advance)
        if advance:
            self.u.assign(u)
        return w_sn

    def call(self, inputs, training=False):
        w_sn = ops.cast(self.kernel_for_call(training), self.compute_dtype)
        layer = self.layer
        if self._is_embedding:
            return ops.take(w_sn, ops.cast(inputs, "int32"), axis=0)
        inputs = ops.cast(inputs, self.compute_dtype)
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, w_sn)
        else:
            outputs = ops.conv(inputs, w_sn, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        if layer.use_bias:
            outputs = outputs + ops.cast(layer.bias, self.compute_dtype)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        config.update(power_iterations=self.power_iterations, epsilon=self.epsilon)
        return config
