"""The runs dashboard, ``/ui/`` on the training service (``/training/ui/`` at the edge).

Pages rendered on the server from Jinja2 templates, with small scripts of our own and uPlot
(vendored under ``static/vendor/uplot``) for the plots: Runs (the search language of `training
runs list`, keyset pages, live status, selection for compare), Run (params, metrics and their
folds, the held-out split's artefacts, the log of a failed run, live progress, cancel),
Compare, Models and aliases (promote, rollback, the live tag), Data sets (uploads, the
training form). The routes translate, as the API's routers do: the store, the registry, the
executor and the request model are the API's own.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from training.api.ui import datasets, login, registry, runs
from training.api.ui.access import Sessions, session_secret
from training.api.ui.dashboard import STATIC, Dashboard
from training.serving.keys import KeyStore
from training.settings import ServerSettings


def install(app: FastAPI, settings: ServerSettings, keys: KeyStore | None) -> None:
    """The dashboard's routes and static files on the training service's app."""
    sessions = Sessions(session_secret(settings), keys, settings.ui_session_hours * 3600)
    app.state.dashboard = Dashboard.make(settings, sessions)
    for module in (login, runs, registry, datasets):
        app.include_router(module.router)
    for module in (runs, datasets):
        app.include_router(module.feeds)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
