"""What G and D share as networks assembled from an architecture table (`self.stages`)."""

__all__ = ["StagedNetwork"]


class StagedNetwork:
    """Mixin for a keras.Model whose residual blocks are attributes `block<i>` (one per stage) with
    `attention<i>` after the stages that have attention. Attributes, not lists, so that
    tf.train.Checkpoint tracks every block by name."""

    @property
    def blocks(self):
        return [getattr(self, f"block{i}") for i in range(len(self.stages))]

    @property
    def attention_layers(self):
        """{block index: the SelfAttention layer after that block}, in block order; empty without attention."""
        return {i: getattr(self, f"attention{i}") for i, stage in enumerate(self.stages) if stage.attention}

    def get_config(self):
        return {"config": self.spec, "name": self.name, "dtype": self.dtype_policy.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
