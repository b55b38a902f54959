"""Training jobs: the executor behind the training service (``executor``) and the job process
it starts for each run (``worker``)."""
