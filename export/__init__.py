"""Serving a trained SAGAN generator with TF-Serving.

* `export.saved_model` — CLI/library: EMA generator of a run → atomic SavedModel version directory,
  plus models.config, batching_parameters.txt and warmup requests (`export.serving_config`).
* `export.signatures` — the tf.Module with the serving_default / generate / attention signatures.
* `export.client` — gRPC and REST client writing a PNG grid.
* `export.grpc_server` — an in-process PredictionService for tests and demos.

Run as `python -m export.<name>`, they start quietly: TensorFlow's start-up notices are held back
unless TF_CPP_MIN_LOG_LEVEL is set (`sagan_tf.runtime.quiet_start`). See docs/serving.md.
"""
from sagan_tf.runtime import quiet_start as _quiet_start

if _quiet_start.running_as_module():
    _quiet_start.quiet_start()
