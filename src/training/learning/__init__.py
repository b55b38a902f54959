"""Learning: data sets and uploads, features, algorithms, evaluation, and the pipeline that
trains, evaluates, records and saves a model (one entry point for the CLI and the workers)."""
