"""What G and D share as networks assembled from an architecture table (`self.stages`)."""


class StagedNetwork:
    """Mixin for a keras.Model whose residual blocks are attributes `block<i>` (one per stage) with
    `attention<i>` after the stages that have attention. Attributes, not lists, so that
    tf.train.Checkpoint tracks every block by name."""

    @property
    def blocks(self):
        return [getattr(self, f"block{i}") for i in range(len(self.stages))]

    @property
    def attention(self):
        """{block index as str: the SelfAttention layer after that block}."""
        return {str(i): getattr(self, f"attention{i}") for i, stage in enumerate(self.stages) if stage.attention}

    @property
    def attention_layers(self):
        return [self.attention[key] for key in sorted(self.attention, key=int)]

    def get_config(self):
        return {"config": self.spec, "name": self.name, "dtype": self.dtype_policy.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
