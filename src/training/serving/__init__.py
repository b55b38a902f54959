"""The serving runtime: what the prediction service (src/service.py) needs at run time.

The bento carries this package whole (``bentofile.yaml``), so it imports nothing else of ours
(``tests/test_layers.py`` fails when a module here does): settings, the feature schema, the
model card, the predictor and its numpy fast path, the HTTP layer, API keys, metrics. The
floors above (store, learning, jobs, api, ops, cli) may import it; it never imports them.
"""
