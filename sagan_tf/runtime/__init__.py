"""How the process runs: the tf.distribute strategy and a replica's share of a batch, the compute precision,
stop signals, and the step as the host counts it. Nothing here knows a network or a dataset."""
