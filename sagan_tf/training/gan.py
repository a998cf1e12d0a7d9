"""The SAGAN training model: G, D and an EMA copy of G, trained by `fit` with a custom `train_step`.

One `train_step` = `n_dis` discriminator updates, then one generator update (TTUR: separate Adam
optimizers and learning rates), then the EMA update. It runs in replica context under any
tf.distribute strategy (Keras calls it through `strategy.run`):

* losses are averaged over the GLOBAL batch (`tf.nn.compute_average_loss`) and the optimizers sum
  gradients across replicas;
* noise and fake labels are drawn with stateless ops from (seed, step, purpose) for the whole global
  batch, and each replica takes its own rows: replicas see different noise;
* the batch the dataset yields holds `n_dis` real batches, one per D update, laid out so that each
  replica's share of batch k is one device's (`training.loop.replica_major`).

So N replicas compute the single-device update when G's batch norm is cross-replica (`sync_bn`); with
per-replica batch norm G's statistics are those of each replica's share (docs/distributed.md).

What it returns is this step's values (plain tensors, no running means, averaged over the replicas
so that any cross-replica reduction of them gives the global value; see `train_step`), and
`health_scalars()` reads the signals that live in the weights (γ, σ, learning rates); the monitoring
callbacks log both every `log_every` steps.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from sagan_tf.layers.spectral_norm import SpectralNormalization, power_iteration_paused
from sagan_tf.losses import hinge_d_loss, hinge_g_loss, orthogonal_penalty
from sagan_tf.models import Discriminator, Generator
from sagan_tf.runtime.precision import resolve_precision
from sagan_tf.runtime.replicas import mean_over_replicas, replica_count, replica_rows
from sagan_tf.sampling.noise import stateless_truncated_normal
from sagan_tf.config import parse_policy
from sagan_tf.training.augment import augment as augment_images
from sagan_tf.training.ema import update_ema

__all__ = ["SAGAN", "noise_keys", "spectral_norm_layers"]

_LABELS = 1  # what noise_keys folds into z's key to make the labels' key
_AUGMENT_REAL, _AUGMENT_FAKE = 2, 3  # ... and the keys of DiffAugment's draws for the real and fake images


def spectral_norm_layers(network: keras.Model) -> list[SpectralNormalization]:
    """Every SpectralNormalization layer inside `network` (attention convolutions and D's embedding included)."""
    return [layer for layer in network._flatten_layers(include_self=False) if isinstance(layer, SpectralNormalization)]


def noise_keys(seed, counter):
    """The stateless-RNG keys of one draw of the train step's noise: (z's, the fake labels'), from the run's
    `seed` and the draw's `counter` (step · (n_dis + 1) + purpose). z's key is (seed, counter); the labels'
    is folded from it, so the two never coincide (a swapped pair (counter, seed) would, whenever
    counter == seed, and would tie run `a`'s labels at draw `b` to run `b`'s z at draw `a`)."""
    z_key = tf.stack([tf.cast(seed, tf.int32), tf.cast(counter, tf.int32)])
    return z_key, tf.random.experimental.stateless_fold_in(z_key, _LABELS)


def _summed_rows(gradient):
    """A gradient with the norm of its dense form. An embedding's IndexedSlices repeat a row for each
    repeated label, and the norm of the slices is not the norm of their sum; summing the slices per
    distinct row costs O(batch × width), where densifying would write every row of every table (12.8 M
    floats for G's class-conditional tables at 128²) on every step."""
    if isinstance(gradient, tf.IndexedSlices):
        rows, position = tf.unique(gradient.indices)
        return tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    return gradient


class SAGAN(keras.Model):
    """A class-conditional GAN over any `generator` G((z, labels)) and `discriminator` D((images, labels)),
    as keras-io's GAN examples shape it: build the networks, compile with the optimizers (and losses),
    then `fit`. `SAGAN.from_experiment(config)` builds the paper's networks from an experiment config
    (Keras' own `from_config` stays the deserialisation hook it is).

    The EMA generator is a copy of `generator` made from its Keras config (`generator.get_config()`), so
    a replacement network only needs to serialise like the Keras layers here. `generator.spec` gives
    z_dim and num_classes. `health=False` makes the train step return only the losses and D outputs (to
    measure what the health signals cost: benchmarks/monitoring.py). `g_ortho_reg` > 0 adds BigGAN's
    orthogonal regularisation of G's spectrally normalised kernels to G's loss (`losses.orthogonal_penalty`;
    the logged g_loss stays the adversarial term).
    """

    def __init__(self, generator, discriminator, *, n_dis=1, seed=0, ema_decay=0.9999, ema_start=1000,
                 g_ortho_reg=0.0, augment="", health=True, **kwargs):
        kwargs.setdefault("name", "sagan")
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.ema_generator = type(generator).from_config({**generator.get_config(), "name": "ema_generator"})
        self.z_dim, self.num_classes = int(generator.spec["z_dim"]), int(generator.spec["num_classes"])
        self.n_dis, self.seed = int(n_dis), int(seed)
        self.ema_decay, self.ema_start = float(ema_decay), int(ema_start)
        self.g_ortho_reg = float(g_ortho_reg)
        self.augment = parse_policy(augment)
        self.health = bool(health)

    @classmethod
    def from_experiment(cls, config, health=True):
        """The SAGAN an experiment config (sagan_tf.config) describes: its G and D in its precision policy."""
        dtype = resolve_precision(config.mixed_precision)
        return cls(Generator(config, dtype=dtype), Discriminator(config, dtype=dtype), n_dis=config.n_dis,
                   seed=config.seed, ema_decay=config.ema_decay, ema_start=config.ema_start,
                   g_ortho_reg=config.g_ortho_reg, augment=config.augment, health=health)

    def compile(self, g_optimizer, d_optimizer, d_loss_fn=hinge_d_loss, g_loss_fn=hinge_g_loss, **kwargs):
        """Both optimizers (TTUR: each with its own rate) and the per-example losses (sagan_tf.losses:
        `d_loss_fn(real_logits, fake_logits)`, `g_loss_fn(fake_logits)`; hinge by default)."""
        super().compile(**kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.d_loss_fn, self.g_loss_fn = d_loss_fn, g_loss_fn
        self.build_all()

    def build_all(self):
        """Creates every weight and both optimizers' slots before the first step (needed under
        tf.distribute), and starts the EMA generator as an exact copy of G."""
        for network in (self.generator, self.discriminator, self.ema_generator):
            network.build()
        self.ema_generator.set_weights(self.generator.get_weights())
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    @property
    def step(self):
        """Generator updates done so far (the run's step counter)."""
        return self.g_optimizer.iterations

    @property
    def metrics(self):
        return []  # no Keras metric trackers: fit's logs are what train_step returns, this step's values

    def replica_noise(self, local_batch, purpose):
        """(z, labels) for this replica: its rows (`replicas.replica_rows`) of a global draw keyed by
        (seed, step, purpose) (`noise_keys`)."""
        step = tf.cast(self.step, tf.int32)
        z_key, label_key = noise_keys(self.seed, step * (self.n_dis + 1) + purpose)
        global_batch = local_batch * replica_count()
        z = stateless_truncated_normal([global_batch, self.z_dim], z_key)
        labels = tf.random.stateless_uniform([global_batch], seed=label_key, minval=0,
                                             maxval=max(self.num_classes, 1), dtype=tf.int32)
        return tuple(replica_rows(z, labels))

    def augmented(self, images, purpose, which):
        """`images` (this replica's rows) through DiffAugment (`augment`), drawn from the key of this step's
        draw `purpose` folded with `which` (real or fake); `images` itself when augmentation is off."""
        if not self.augment:
            return images
        z_key, _ = noise_keys(self.seed, tf.cast(self.step, tf.int32) * (self.n_dis + 1) + purpose)
        return augment_images(images, self.augment, tf.random.experimental.stateless_fold_in(z_key, which))

    def _apply(self, optimizer, tape, scaled_loss, variables):
        """Applies the gradients of `scaled_loss` (`optimizer.scale_loss(loss)`, computed under `tape`);
        returns their global norm, unscaled, for this replica's batch (the gradients here are this
        replica's share, 1/N of its batch-mean gradient on N replicas). Under mixed_float16 the norm is
        not finite exactly when the optimizer skips the update (its loss scale halves; `step` still
        advances: training.optimizers.StepCountingLossScaleOptimizer)."""
        scale = optimizer.scale_loss(tf.constant(1.0))  # a LossScaleOptimizer's dynamic scale, else 1
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return tf.linalg.global_norm([_summed_rows(g) for g in grads]) * (replica_count() / scale)

    def train_step(self, data):
        images, labels = data
        local_batch = tf.shape(images)[0] // self.n_dis

        # 1. n_dis discriminator updates, each on its own slice of real images.
        for k in range(self.n_dis):
            real = images[k * local_batch:(k + 1) * local_batch]
            real_labels = labels[k * local_batch:(k + 1) * local_batch]
            z, fake_labels = self.replica_noise(local_batch, purpose=k)
            with power_iteration_paused():  # G's u advances once per step, in the G update below
                fake = ops.stop_gradient(self.generator((z, fake_labels), training=True))
            real = self.augmented(ops.cast(real, fake.dtype), k, _AUGMENT_REAL)
            fake = self.augmented(fake, k, _AUGMENT_FAKE)
            with tf.GradientTape() as tape:
                # Real and fake in one pass: D has no batch statistics, so this equals two passes.
                logits = self.discriminator(
                    (ops.concatenate([ops.cast(real, fake.dtype), fake]), ops.concatenate([real_labels, fake_labels])),
                    training=True)
                real_logits, fake_logits = logits[:local_batch], logits[local_batch:]
                per_example = self.d_loss_fn(real_logits, fake_logits)
                scaled_d_loss = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(per_example))
            d_grad_norm = self._apply(self.d_optimizer, tape, scaled_d_loss, self.discriminator.trainable_variables)

        # 2. One generator update, with G's one power iteration of the step; D's advanced in its own
        #    update (here D runs in inference mode).
        z, fake_labels = self.replica_noise(local_batch, purpose=self.n_dis)
        with tf.GradientTape() as tape:
            fake_g = self.augmented(self.generator((z, fake_labels), training=True), self.n_dis, _AUGMENT_FAKE)
            fake_logits_g = self.discriminator((fake_g, fake_labels), training=False)
            g_per_example = self.g_loss_fn(fake_logits_g)
            g_loss = tf.nn.compute_average_loss(g_per_example)
            if self.g_ortho_reg:  # BigGAN's orthogonal regularisation of G's raw kernels, once over the replicas
                penalty = orthogonal_penalty([layer.kernel for layer in spectral_norm_layers(self.generator)])
                g_loss += tf.nn.scale_regularization_loss(self.g_ortho_reg * penalty)
            scaled_g_loss = self.g_optimizer.scale_loss(g_loss)
        g_grad_norm = self._apply(self.g_optimizer, tape, scaled_g_loss, self.generator.trainable_variables)

        # 3. EMA of G (a copy until ema_start).
        decay = tf.where(self.step >= self.ema_start, self.ema_decay, 0.0)
        update_ema(self.ema_generator, self.generator, decay)

        # This step's values (the last D update's for D): replica-local means, averaged over the replicas
        # here (with equal local batches: the global-batch means), so that every replica returns the same
        # logs and Keras' reduction of them ("mean", or "first" under TPUStrategy) is that average.
        logs = {"d_loss": ops.mean(per_example), "g_loss": ops.mean(g_per_example),
                "d_real": ops.mean(real_logits), "d_fake": ops.mean(fake_logits)}
        if self.health:  # hinge margins still active: real with D < 1, fake with D > -1
            logs.update(d_real_active=ops.mean(ops.cast(real_logits < 1, "float32")),
                        d_fake_active=ops.mean(ops.cast(fake_logits > -1, "float32")),
                        d_grad_norm=d_grad_norm, g_grad_norm=g_grad_norm)
        return mean_over_replicas(logs)

    def health_scalars(self):
        """The signals that live in the weights, read without a forward pass or a power iteration:
        {'<g|d>_gamma_<size>': γ of the attention layer at size×size, '<g|d>_sigma_max' / '_sigma_mean':
        max / mean over the network's spectrally normalised layers of σ = ‖W u‖ (the stored u: the
        estimate an inference forward divides by), 'g_lr', 'd_lr': the optimizers' current rates}."""
        values = {}
        for prefix, network in (("g", self.generator), ("d", self.discriminator)):
            for i, layer in network.attention_layers.items():
                values[f"{prefix}_gamma_{network.stages[i].resolution}"] = ops.cast(layer.gamma, "float32")
            sigmas = ops.stack([layer.normalized_kernel(training=False)[1] for layer in spectral_norm_layers(network)])
            values[f"{prefix}_sigma_max"], values[f"{prefix}_sigma_mean"] = ops.max(sigmas), ops.mean(sigmas)
        for prefix, optimizer in (("g", self.g_optimizer), ("d", self.d_optimizer)):
            values[f"{prefix}_lr"] = ops.cast(optimizer.learning_rate, "float32")
        return values
