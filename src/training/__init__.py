"""The model lifecycle: train, record, register, build, serve.

Floors, each importing only the ones below it (``tests/test_layers.py`` holds them to it):
``cli`` (the command line) > ``ops`` (bento build, edge, keys, `training up`) > ``api`` (the
training web service) > ``jobs`` (executor and job process) > ``learning`` (data, features,
algorithms, evaluation, the pipeline) > ``store`` (run store, registry, migrations) > the
shared modules here (``settings``, ``errors``, ``filelock``, ``progress``) > ``serving`` (the
runtime the bento carries, which imports nothing else of ours).
"""
