"""Command-line trainers: flags → config → `sagan_tf.training.train` (see `trainers.common`).

Run as `python -m trainers.<name>`, they start quietly: TensorFlow's start-up notices are held back
unless TF_CPP_MIN_LOG_LEVEL is set (`sagan_tf.runtime.quiet_start`).
"""
from sagan_tf.runtime import quiet_start as _quiet_start

if _quiet_start.running_as_module():
    _quiet_start.quiet_start()
