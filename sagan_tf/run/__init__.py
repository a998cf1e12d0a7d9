"""A training run's directory and the files around it: every read and write through `tf.io.gfile`
(`files`), the names of a run directory's files and how to restore from it (`run_dir`), the class-name map
(`class_map`) and the one-writer lock (`run_lock`)."""
