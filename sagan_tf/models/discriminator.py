"""The SAGAN discriminator with the projection head (Miyato & Koyama 2018).

    φ(x) = Σ_spatial ReLU(blocks(x))           (global sum pooling)
    logit = ψ(φ(x)) + ⟨SN-Embedding(y), φ(x)⟩   (ψ an SN-Linear to one unit)

φ has the last block's width (`architecture.DISCRIMINATOR_TABLES`): 4·ch at 32², 16·ch at 64², 128²
and 256².
"""
import keras
from keras import ops

from sagan_tf.layers import DiscriminatorBlock, SelfAttention, SpectralNormalization, get_initializer
from sagan_tf.layers.serialization import register
from sagan_tf.models.staged import StagedNetwork
from sagan_tf.models.architecture import discriminator_stages, model_fields

__all__ = ["Discriminator"]


@register
class Discriminator(StagedNetwork, keras.Model):
    """Call as `D((images, labels), training=...)`; returns float32 logits of shape [batch].

    The head runs in float32 whatever the mixed precision policy.
    """

    def __init__(self, config, **kwargs):
        kwargs.setdefault("name", "discriminator")
        super().__init__(**kwargs)
        self.spec = model_fields(config)
        spec = self.spec
        dtype = self.dtype_policy
        self.stages = discriminator_stages(spec["resolution"], spec["ch"], spec["image_channels"],
                                           spec["d_attention"])
        for i, stage in enumerate(self.stages):
            # Plain attributes (not lists) so tf.train.Checkpoint tracks every block by name.
            setattr(self, f"block{i}", DiscriminatorBlock(
                stage.out_channels, downsample=stage.resample, preactivation=i > 0, init=spec["init"],
                fused_resample=spec["fused_resample"], dtype=dtype, name=f"block{i}"))
            if stage.attention:
                setattr(self, f"attention{i}", SelfAttention(
                    spec["pooled_attention"], spec["init"], query_block=spec["attention_query_block"], dtype=dtype,
                    name=f"attention{i}"))
        init = get_initializer(spec["init"])
        self.linear = SpectralNormalization(
            keras.layers.Dense(1, kernel_initializer=init, dtype="float32", name="linear"),
            dtype="float32", name="sn_linear")
        self.embedding = None
        if spec["num_classes"]:
            self.embedding = SpectralNormalization(
                keras.layers.Embedding(spec["num_classes"], self.stages[-1].out_channels,
                                       embeddings_initializer=get_initializer(spec["init"]), dtype="float32",
                                       name="embedding"), dtype="float32", name="sn_embedding")

    def features(self, images, training=False, return_attention=False):
        """φ(x): the globally sum-pooled features, float32 [batch, the last block's width] (4·ch at 32²,
        16·ch at 64² and above)."""
        h, maps = images, []
        for i, (block, stage) in enumerate(zip(self.blocks, self.stages)):
            h = block(h, training=training)
            if stage.attention and return_attention:
                h, attention = getattr(self, f"attention{i}")(h, training=training, return_attention=True)
                maps.append(attention)
            elif stage.attention:  # without the maps, so a query-blocked layer can take its blocked path
                h = getattr(self, f"attention{i}")(h, training=training)
        phi = ops.sum(ops.cast(ops.relu(h), "float32"), axis=(1, 2))
        return (phi, maps) if return_attention else phi

    def call(self, inputs, training=False, return_attention=False):
        images, labels = inputs
        phi, maps = (self.features(images, training=training, return_attention=True) if return_attention
                     else (self.features(images, training=training), None))
        logits = self.linear(phi, training=training)[:, 0]
        if self.embedding is not None:
            logits = logits + ops.sum(self.embedding(labels, training=training) * phi, axis=-1)
        return (logits, maps) if return_attention else logits

    def build(self, input_shape=None):
        """Builds every weight by running one tiny batch (shapes are fixed by the config)."""
        size, channels = self.spec["resolution"], self.spec["image_channels"]
        self.call((ops.zeros((1, size, size, channels)), ops.zeros((1,), "int32")))
