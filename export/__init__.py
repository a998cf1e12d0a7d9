"""Serving a trained SAGAN generator with TF-Serving.

* `export.saved_model` — CLI/library: EMA generator of a run → atomic SavedModel version directory,
  plus models.config, batching_parameters.txt and warmup requests (`export.serving_config`).
* `export.signatures` — the tf.Module with the serving_default / generate / attention signatures.
* `export.client` — gRPC and REST client writing a PNG grid.
* `export.grpc_server` — an in-process PredictionService for tests and demos.

See docs/serving.md.
"""
