"""The SAGAN generator: z, y → SN-Linear → 4×4 map → ResBlockUp × k (+ self-attention) → BN → ReLU → SN-Conv → tanh."""
import keras
from keras import ops

from sagan_tf.layers import (ConditionalBatchNormalization, GeneratorBlock, SelfAttention, SpectralNormalization,
                             get_initializer)
from sagan_tf.layers.resblocks import sn_conv
from sagan_tf.layers.serialization import register
from sagan_tf.models.staged import StagedNetwork
from sagan_tf.models.architecture import GENERATOR_BASE_RESOLUTION, generator_stages, model_fields

__all__ = ["Generator"]


@register
class Generator(StagedNetwork, keras.Model):
    """Class-conditional SAGAN generator built from `architecture.GENERATOR_TABLES[config.resolution]`.

    Call as `G((z, labels), training=...)` with z float [batch, z_dim] and int labels [batch]
    (ignored when num_classes=0); returns float32 images in [-1, 1], NHWC. With
    `return_attention=True` also returns the list of attention maps, one per attention layer.
    """

    def __init__(self, config, **kwargs):
        kwargs.setdefault("name", "generator")
        super().__init__(**kwargs)
        self.spec = model_fields(config)
        spec = self.spec
        dtype = self.dtype_policy
        self.stages = generator_stages(spec["resolution"], spec["ch"], spec["g_attention"])
        first = self.stages[0].in_channels
        base = GENERATOR_BASE_RESOLUTION
        self.linear = SpectralNormalization(
            keras.layers.Dense(base * base * first, kernel_initializer=get_initializer(spec["init"]), dtype=dtype,
                               name="linear"), dtype=dtype, name="sn_linear")
        for i, stage in enumerate(self.stages):
            # Plain attributes (not lists) so tf.train.Checkpoint tracks every block by name.
            setattr(self, f"block{i}", GeneratorBlock(
                stage.out_channels, spec["num_classes"], upsample=True, init=spec["init"],
                synchronized_bn=spec["sync_bn"], fused_resample=spec["fused_resample"], dtype=dtype,
                name=f"block{i}"))
            if stage.attention:
                setattr(self, f"attention{i}", SelfAttention(
                    spec["pooled_attention"], spec["init"], query_block=spec["attention_query_block"], dtype=dtype,
                    name=f"attention{i}"))
        # Plain (unconditional) BN with its own affine before the output convolution.
        self.bn_out = ConditionalBatchNormalization(0, spec["sync_bn"], dtype=dtype, name="bn_out")
        self.conv_out = sn_conv(spec["image_channels"], 3, spec["init"], dtype, "conv_out")

    def call(self, inputs, training=False, return_attention=False):
        z, labels = inputs
        base = GENERATOR_BASE_RESOLUTION
        h = ops.reshape(self.linear(z, training=training), (-1, base, base, self.stages[0].in_channels))
        maps = []
        for i, (block, stage) in enumerate(zip(self.blocks, self.stages)):
            h = block(h, labels, training=training)
            if stage.attention and return_attention:
                h, attention = getattr(self, f"attention{i}")(h, training=training, return_attention=True)
                maps.append(attention)
            elif stage.attention:  # without the maps, so a query-blocked layer can take its blocked path
                h = getattr(self, f"attention{i}")(h, training=training)
        h = ops.relu(self.bn_out(h, training=training))
        images = ops.tanh(ops.cast(self.conv_out(h, training=training), "float32"))
        return (images, maps) if return_attention else images

    def build(self, input_shape=None):
        """Builds every weight by running one tiny batch (shapes are fixed by the config)."""
        z = ops.zeros((1, self.spec["z_dim"]))
        self.call((z, ops.zeros((1,), "int32")))
