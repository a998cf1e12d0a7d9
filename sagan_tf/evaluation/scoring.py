"""One evaluation as `python -m trainers.evaluate` runs it: a source (a run's EMA checkpoint, an export, or
real images of a split) scored against the real data's reference statistics, and the record of it.

The record is what ``--json`` writes: the step and checkpoint scored, the feature network (name, spec,
fingerprint), the sample count, truncation and seed, which batch-norm statistics sampled it, the reference
(data set, images, features kept) and the metrics ({"<metric>/<network>": value}).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

from sagan_tf import sampling
from sagan_tf.data import real_images
from sagan_tf.evaluation import runner
from sagan_tf.evaluation.features import load_feature_network
from sagan_tf.run import run_dir
from sagan_tf.sampling import exported

__all__ = ["Source", "run_source", "export_source", "real_split_source", "score"]


@dataclasses.dataclass
class Source:
    """What is scored: `generator` (a Generator or a sample fn) with the `config` naming its data set."""
    generator: object
    config: object
    checkpoint: str
    step: int | None
    real: bool = False


def run_source(model_dir: str, checkpoint: str | None = None) -> Source:
    """The EMA generator of a training run's latest checkpoint (or of `checkpoint`, a prefix or directory)."""
    restored = run_dir.load_ema_generator(model_dir, checkpoint)
    return Source(restored.generator, restored.config, restored.checkpoint, restored.step)


def export_source(path: str, config) -> Source:
    """The generator of an export of export.saved_model, rebuilt with the exported weights and statistics;
    `config` (a preset's) names the real data set, the export its classes, z size and step."""
    generator = exported.keras_generator(path)
    config.update({field: generator.spec[field] for field in ("num_classes", "z_dim")})
    return Source(generator, config, path, exported.read_info(path).get("step"))


def real_split_source(model_dir: str, split: str, num_samples: int, batch_size: int, data_dir: str | None,
                      seed: int) -> Source:
    """Real images of `split` of a run's data set, answered per requested label: the real-data row."""
    config = run_dir.read_config(model_dir)
    generator = real_images.real_split_sample_fn(config, split, num_samples, batch_size, data_dir, seed=seed)
    return Source(generator, config, f"real:{split}", None, real=True)


def score(source: Source, network_spec: str, *, num_samples: int, batch_size: int, num_reference: int = 0,
          num_real_features: int = 0, model_dir: str = "", reference_split: str | None = None,
          reference_cache: str | None = None, data_dir: str | None = None, truncation: float | None = None,
          truncation_statistics: bool = True, seed: int = 0, log_fn=print) -> dict:
    """Scores `source` (see the module docstring for the record it returns). `num_reference` 0: as many
    real images as samples; `num_real_features` 0: min(real images, samples). `reference_cache` None:
    ``<model_dir>/reference_stats``, or without a `model_dir` (an export) the system temp directory,
    never beside the export (a committed or served directory)."""
    if reference_cache is None and not model_dir:
        reference_cache = os.path.join(tempfile.gettempdir(), "sagan_tf_reference_stats")
    network = load_feature_network(network_spec)
    num_reference = num_reference or num_samples
    num_real_features = num_real_features or min(num_reference, num_samples)
    reference, reference_name, num_reference = runner.run_reference(
        source.config, network, model_dir, num_reference, num_real_features, batch_size, split=reference_split,
        cache=reference_cache, data_dir=data_dir, log_fn=log_fn)
    num_real_features = min(num_real_features, num_reference)
    generator = source.generator
    if not truncation_statistics:  # a plain callable is sampled with the stored statistics
        generator = sampling.as_sample_fn(generator)
    config = source.config
    metrics = runner.evaluate_generator(
        generator, network, reference, num_samples, batch_size, config.num_classes, z_dim=config.z_dim,
        truncation=truncation, seed=seed, dataset_name=real_images.canonical_dataset_name(config.dataset))
    log_fn(f"{source.checkpoint} (step {source.step}): {num_samples} {'real images' if source.real else 'samples'} "
           f"vs {num_reference} images of {reference_name}, feature network {network.name}")
    recomputed = truncation is not None and truncation_statistics and not source.real
    return {"step": source.step, "checkpoint": source.checkpoint, "network": network.name,
            "network_spec": network_spec, "network_fingerprint": getattr(network, "fingerprint", None),
            "num_samples": num_samples, "truncation": truncation, "seed": seed,
            "batch_norm_statistics": "recomputed for the truncation" if recomputed else "stored",
            "reference": {"dataset": reference_name, "num": int(reference["num"]), "num_features": num_real_features},
            "metrics": metrics}
