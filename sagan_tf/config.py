"""The experiment configuration: every field, its default, and validation.

Presets in `configs/` start from `default_config()` and override fields. `validate_config` runs before
any work starts and names the offending field and the allowed values.

Model fields (read by the networks; also stored in their Keras config):
  resolution       output size of G / input size of D: one of architecture.RESOLUTIONS.
  ch               base channel width (64 in the paper's 128² networks: docs/architecture.md).
  z_dim            noise dimension (128).
  num_classes      number of classes; 0 = unconditional (no CBN tables, no projection term).
  image_channels   1 or 3.
  g_attention      feature sizes after which G applies self-attention (list, may be empty).
  d_attention      the same for D.
  init             kernel initialiser: 'orthogonal' | 'normal' (N(0, 0.02)) | 'glorot'.
  pooled_attention 2×2 max-pool keys and values (the official code's; the paper pools nothing); False for full attention.
  sync_bn          cross-replica batch statistics in G's batch norms.
  fused_resample   run G's upsample→conv and D's conv→pool as the equivalent low-resolution / strided
                   convolutions (same variables and function, about 1.6× fewer FLOPs); False = plain form.
  attention_query_block  compute every self-attention this many query rows at a time (0 = one einsum over
                   all queries); same variables and function, the [B, N, M] logits never held at once
                   (a custom gradient recomputes each block's softmax in the backward pass).
Training fields:
  dataset          'fashion_mnist_idx' | 'image_folder' | 'tfds:<builder name>'.
  random_flip      random horizontal flips of real images.
  class_names      the name of each label (label i = class_names[i]), or () when the dataset names none.
                   trainers.image_folder sets it from the class folders; config.json and classes.json
                   record it, so a class can be sampled by name and a resumed run reads the same folders.
  manual_dir       TFDS only: directory holding the dataset's original archives (ImageNet's
                   ILSVRC2012_img_{train,val}.tar), used to prepare it offline on the first run.
  data_prepare_timeout  TFDS, multi-worker: seconds the other workers wait for the chief to prepare the
                   dataset before failing (default 24 h; preparing ImageNet takes hours).
  batch_size       GLOBAL batch (split across replicas).
  g_lr, d_lr       Adam learning rates (TTUR: 1e-4 and 4e-4).
  beta1, beta2     Adam betas (paper: 0 and 0.9; the reference code leaves β2 at 0.999).
  n_dis            D updates per G update.
  loss             'hinge' (paper) | 'non_saturating'.
  g_ortho_reg      BigGAN's orthogonal regularisation of G's spectrally normalised kernels (sagan_tf.losses:
                   coefficient β of β‖WᵀW ⊙ (1 − I)‖²_F / 2 added to G's loss; BigGAN uses 1e-4); 0 = off (the
                   paper's SAGAN).
  augment          DiffAugment for D's inputs, real and generated alike (sagan_tf.training.augment):
                   '' (off, the paper's) or a comma-separated list of 'translation', 'cutout'.
  ema_decay        decay of the EMA of G's weights used for sampling.
  ema_start        G step from which the EMA averages (before: it copies G).
  mixed_precision  'auto' | 'float32' | 'mixed_bfloat16' | 'mixed_float16'; 'auto' (default) is
                   mixed_bfloat16 where the hardware has native bf16 (AMX CPU, TPU, GPU ≥ sm_80), else
                   float32 (sagan_tf.runtime.precision); the run's config.json records the resolved name, and a
                   resume with 'auto' keeps that one on any machine (an explicit name switches it).
  jit_compile      compile the train step with XLA.
  steps_per_execution  train steps per call of the compiled train function (Keras `compile`; default 1).
                   Callbacks run between executions, so checkpoint_every, sample_every, log_every and
                   eval_every must be multiples of it (validated); train_steps need not be (the last
                   execution is shorter). Logged step values are those of each execution's last step.
  seed             seeds weights, data order and noise.
  train_steps      total G steps of a run (a resumed run continues to this count).
  checkpoint_every, sample_every, log_every, keep_checkpoints: checkpoint/monitoring cadence in G steps.
  eval_every, eval_samples: periodic evaluation cadence (0 = off) and sample count.
  eval_feature_network  'classifier:<dir>' | 'savedmodel:<dir>' | 'keras_inception:<h5>' (needed when
                   eval_every > 0); eval_batch_size, eval_reference_split (default: test for
                   Fashion-MNIST, else train), eval_reference_cache (default <model_dir>/reference_stats).
"""
from __future__ import annotations

import ml_collections

from sagan_tf.layers.arguments import check_query_block
from sagan_tf.layers.initializers import INITIALIZERS
from sagan_tf.models.architecture import RESOLUTIONS, attention_resolutions, discriminator_stages, generator_stages
from sagan_tf.runtime.precision import AUTO, POLICIES

__all__ = ["default_config", "validate_config", "AUGMENTATIONS", "parse_policy"]

PRECISIONS = (AUTO, *POLICIES)
# The operations of config.augment (sagan_tf.training.augment implements them), applied in this order.
AUGMENTATIONS = ("translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """The operations of an augmentation policy ("translation,cutout" → ('translation', 'cutout')); "" → ()."""
    names = tuple(name.strip() for name in str(policy).split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augmentation policy {policy!r}: unknown operation(s) {unknown}; "
                         f"choose from {list(AUGMENTATIONS)} (comma-separated), or '' for none")
    return names


def default_config() -> ml_collections.ConfigDict:
    """All fields with the paper's values where the paper gives one (ImageNet 128² shape)."""
    return ml_collections.ConfigDict(dict(
        # Model
        resolution=128, ch=64, z_dim=128, num_classes=1000, image_channels=3,
        g_attention=(32,), d_attention=(32,), init="orthogonal", pooled_attention=True, sync_bn=False,
        fused_resample=True, attention_query_block=0,
        # Data
        dataset="tfds:imagenet2012", random_flip=False, class_names=(),
        manual_dir=ml_collections.config_dict.placeholder(str), data_prepare_timeout=24 * 3600.0,
        # Optimisation (paper, section 5)
        batch_size=256, g_lr=1e-4, d_lr=4e-4, beta1=0.0, beta2=0.9, n_dis=1, loss="hinge", g_ortho_reg=0.0,
        ema_decay=0.9999, ema_start=1000, augment="",
        # Runtime
        mixed_precision="auto", jit_compile=False, steps_per_execution=1, seed=0,
        train_steps=1_000_000, checkpoint_every=1000, sample_every=1000, log_every=100, keep_checkpoints=3,
        eval_every=0, eval_samples=10000, eval_feature_network="", eval_batch_size=100,
        eval_reference_split=ml_collections.config_dict.placeholder(str),
        eval_reference_cache=ml_collections.config_dict.placeholder(str),
    ))


def _require(condition, field, value, allowed):
    if not condition:
        raise ValueError(f"config.{field}={value!r} is not allowed; allowed: {allowed}.")


def _validate_steps_per_execution(config):
    """Callbacks run once per execution of `steps_per_execution` steps and must still land on their steps."""
    per_execution = config.steps_per_execution
    _require(isinstance(per_execution, int) and not isinstance(per_execution, bool) and per_execution > 0,
             "steps_per_execution", per_execution, "a positive integer (train steps per compiled execution)")
    for field in ("checkpoint_every", "sample_every", "log_every", "eval_every"):
        value = config[field]
        if value and value % per_execution:
            raise ValueError(
                f"config.{field}={value} is not a multiple of config.steps_per_execution={per_execution}: "
                f"callbacks run once per execution of {per_execution} steps, so they could not act at step "
                f"{value}; use a multiple of {per_execution} (e.g. {-(-value // per_execution) * per_execution}) "
                f"or another steps_per_execution.")


def validate_config(config: ml_collections.ConfigDict, num_replicas: int = 1) -> ml_collections.ConfigDict:
    """Checks every field; raises ValueError naming the field, its value and what is allowed."""
    _require(config.resolution in RESOLUTIONS, "resolution", config.resolution, list(RESOLUTIONS))
    for field in ("ch", "z_dim", "batch_size", "n_dis", "train_steps", "checkpoint_every", "sample_every",
                  "log_every", "keep_checkpoints"):
        value = config[field]
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, value,
                 "a positive integer")
    _require(isinstance(config.num_classes, int) and config.num_classes >= 0, "num_classes", config.num_classes,
             "an integer >= 0 (0 = unconditional)")
    names = list(config.class_names or ())
    _require(not names or (len(names) == config.num_classes and len(set(names)) == len(names)
                           and all(isinstance(name, str) and name for name in names)), "class_names", names,
             f"() or {config.num_classes} distinct non-empty names, one per class (num_classes={config.num_classes})")
    _require(config.image_channels in (1, 3), "image_channels", config.image_channels, [1, 3])
    _require(config.init in INITIALIZERS, "init", config.init, sorted(INITIALIZERS))
    _require(config.mixed_precision in PRECISIONS, "mixed_precision", config.mixed_precision, list(PRECISIONS))
    from sagan_tf.losses import LOSSES  # imports TensorFlow: only once a config is validated, not with the presets
    _require(config.loss in LOSSES, "loss", config.loss, list(LOSSES))
    for network, field in (("generator", "g_attention"), ("discriminator", "d_attention")):
        allowed = attention_resolutions(network, config.resolution)
        for size in config[field]:
            _require(size in allowed, field, list(config[field]),
                     f"sizes from {allowed} (the {network}'s feature-map sizes at resolution {config.resolution})")
    stages = (generator_stages(config.resolution, config.ch, config.g_attention)
              + discriminator_stages(config.resolution, config.ch, config.image_channels, config.d_attention))
    for stage in stages:
        _require(not stage.attention or stage.out_channels % 8 == 0, "ch", config.ch,
                 f"a width giving a multiple of 8 channels where attention sits ({stage.out_channels} channels "
                 f"at {stage.resolution}x{stage.resolution})")
    check_query_block(config.attention_query_block, "config.attention_query_block")
    for field in ("g_lr", "d_lr"):
        _require(config[field] > 0, field, config[field], "a positive learning rate")
    for field in ("beta1", "beta2"):
        _require(0 <= config[field] < 1, field, config[field], "a value in [0, 1)")
    _require(isinstance(config.g_ortho_reg, (int, float)) and not isinstance(config.g_ortho_reg, bool)
             and config.g_ortho_reg >= 0, "g_ortho_reg", config.g_ortho_reg,
             "a coefficient >= 0 (BigGAN uses 1e-4; 0 = off)")
    try:
        parse_policy(config.augment)
    except ValueError as error:
        raise ValueError(f"config.augment={config.augment!r}: {error}") from None
    _require(0 <= config.ema_decay < 1, "ema_decay", config.ema_decay, "a value in [0, 1)")
    _require(config.ema_start >= 0, "ema_start", config.ema_start, "a step >= 0")
    _require(config.data_prepare_timeout > 0, "data_prepare_timeout", config.data_prepare_timeout,
             "a positive number of seconds")
    _require(config.eval_every >= 0, "eval_every", config.eval_every, "a step count >= 0 (0 = off)")
    _require(not config.eval_every or config.eval_feature_network, "eval_feature_network",
             config.eval_feature_network, "a feature network spec when eval_every > 0, e.g. 'classifier:<dir>' "
             "(train one with python -m trainers.classifier)")
    _validate_steps_per_execution(config)
    if config.batch_size % num_replicas:
        raise ValueError(f"config.batch_size={config.batch_size} (the global batch) is not divisible by the "
                         f"number of replicas ({num_replicas}); use a multiple of {num_replicas}.")
    return config
