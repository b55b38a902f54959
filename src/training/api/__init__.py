"""The train-model web service (`training serve`): routers per resource over the run store,
the registry and the job executor; HTTP in, calls out, errors as JSON."""
