"""Sampling from a trained generator.

* `noise` -- z ~ N(0, I), optionally truncated: stateless TF draws (the train step, the serving signature)
  and numpy draws from an explicit seed (sheets, evaluations, standing statistics);
* `sheets` -- sample functions ``fn(z, labels) -> images``, class sheets, interpolations, sample dumps;
* `standing_statistics` -- batch-norm statistics recomputed for a generator's weights or a truncation;
* `images` -- uint8 grids and PNG files; `attention_maps` -- the paper's figure-1 overlays;
* `exported` -- an exported SavedModel read back; `generators` -- a run's or an export's generator.

The names below are the sheet interface, as `from sagan_tf import sampling` callers use it.
"""
from sagan_tf.sampling.noise import sample_noise, truncate_noise, truncated_normal
from sagan_tf.sampling.sheets import (SHEET_MODES, SampleFn, Sheet, as_sample_fn, balanced_labels, check_labels,
                                      class_pair_sheet, class_sheet, default_rows, generate, generate_samples,
                                      interpolate, sheet, truncated_sample_fn, truncation_sheet, z_interpolation_sheet)

__all__ = ["SampleFn", "Sheet", "as_sample_fn", "truncated_sample_fn", "truncate_noise", "truncated_normal",
           "sample_noise", "generate", "balanced_labels", "check_labels", "class_sheet", "class_pair_sheet",
           "interpolate", "z_interpolation_sheet", "truncation_sheet", "generate_samples", "default_rows",
           "SHEET_MODES", "sheet"]
