"""Numbers computed on read from raw samples: per-rep metrics, summaries, ops, energy, compare."""
