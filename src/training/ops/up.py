"""The main job (`make up` -> `training up`): from a fresh checkout to a prediction over HTTPS.

Upgrade the run store; train and promote the default model if no `production` alias exists;
build the bento; make API keys for this start; start the prediction service (loopback only)
and Caddy; wait until a prediction succeeds through HTTPS with the local CA; print how to call
it; stay in the foreground, restarting a child that dies, until Ctrl-C or SIGTERM, then stop
them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from training.errors import NotFound, UserError
from training.learning.pipeline import train
from training.learning.request import TrainRequest
from training.ops.bento import BuiltBento, build
from training.ops.edge import ca_certificate, caddy_env, require_free, start_caddy
from training.ops.keys import KeyRing, KeyStoreError
from training.ops.processes import spawn_logged, tool
from training.ops.supervisor import Say, Spawn, Supervisor, tail
from training.progress import Reporter
from training.serving.card import ModelCard
from training.serving.features import FeatureSchema
from training.serving.keys import Scope
from training.settings import EdgeSettings, ServerSettings, ServiceSettings, Settings
from training.store import revision
from training.store.db import get_database
from training.store.registry import Registry
from training.store.runs import RunStore

DEFAULT_MODEL = TrainRequest(dataset="iris", model="logistic_regression", experiment="default")
TRAINING_EXAMPLE = {"dataset": "iris", "model": "random_forest", "params": {"n_estimators": 200}}
READY_TIMEOUT_S = 180


@dataclass
class Started:
    url: str
    ca_file: Path
    predict_key: str
    admin_key: str
    example_row: dict[str, Any]
    logs: dict[str, Path]
    children: Supervisor

    def _curl(self, key: str, body: dict[str, Any], path: str) -> str:
        return (
            f"curl --cacert {shlex.quote(str(self.ca_file))} "
            f"-H {shlex.quote('Authorization: Bearer ' + key)} "
            "-H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body))} {self.url}{path}"
        )

    def curl(self) -> str:
        """A prediction through HTTPS, verified with the local CA."""
        return self._curl(self.predict_key, {"instances": [self.example_row]}, "/predict")

    def training_curl(self) -> str:
        """A training started through HTTPS (admin key)."""
        return self._curl(self.admin_key, TRAINING_EXAMPLE, "/training/runs")


def ensure_production_model(
    settings: Settings, registry: Registry, report: Reporter, say: Say
) -> str:
    try:
        return registry.get_alias("production").model_tag
    except NotFound:
        pass
    say("no production model yet: training the default one (iris, logistic_regression)")
    result = train(DEFAULT_MODEL, settings, RunStore(registry.db), report)
    assert result.model_tag is not None
    registry.promote(result.model_tag, "production")
    say(f"promoted {result.model_tag} to production")
    return result.model_tag


def example_row(schema: FeatureSchema) -> dict[str, Any]:
    """A plausible row for the printed curl: mid-range numbers, the first category."""
    row: dict[str, Any] = {}
    for f in schema.features:
        if f.type == "number":
            mid = ((f.minimum or 0.0) + (f.maximum or 0.0)) / 2
            row[f.name] = round(mid, 3)
        elif f.type == "boolean":
            row[f.name] = False
        else:
            row[f.name] = (f.categories or ("",))[0]
    return row


def _rotate_key(keys: KeyRing, name: str, scope: Scope) -> str:
    """A fresh key for this start; the previous start's key of the same name is revoked."""
    with contextlib.suppress(KeyStoreError):  # the first start has nothing to revoke
        keys.revoke(name)
    _, key = keys.create(name, scope)
    return key


def _all_answer(started: Started, tls: ssl.SSLContext) -> str | None:
    """None once a prediction and the training service both answer through HTTPS."""
    body = {"instances": [started.example_row]}
    headers = {"Authorization": f"Bearer {started.predict_key}"}
    predicted = httpx.post(
        f"{started.url}/predict", json=body, headers=headers, verify=tls, timeout=5
    )
    if predicted.status_code != 200:
        return f"POST /predict: HTTP {predicted.status_code}: {predicted.text[:200]}"
    training = httpx.get(f"{started.url}/training/readyz", verify=tls, timeout=5)
    if training.status_code != 200:
        return f"GET /training/readyz: HTTP {training.status_code}"
    return None


def wait_until_served(started: Started) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        for name, proc in started.children.processes.items():
            if proc.poll() is not None:
                raise UserError(
                    f"{name} exited with {proc.returncode} while starting; its log "
                    f"({started.logs[name]}) ends with:\n{tail(started.logs[name])}"
                )
        if started.ca_file.exists():
            try:
                problem = _all_answer(started, ssl.create_default_context(cafile=started.ca_file))
                if problem is None:
                    return
                last = problem
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise UserError(f"not served through HTTPS after {READY_TIMEOUT_S} s (last: {last})")


def _children(
    built: BuiltBento, settings: ServerSettings, service: ServiceSettings, edge: EdgeSettings
) -> dict[str, Spawn]:
    """How to start each long-running process, given its log: the prediction service (the
    built bento, loopback only), the training service and Caddy in front of both."""
    env = {
        **os.environ,
        "REQUIRE_API_KEY": "true",
        "API_KEYS_FILE": str(settings.keys_path),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    port = str(service.service_port)
    serve = [tool("bentoml"), "serve", built.bento_tag, "--host", "127.0.0.1", "--port", port]
    service_env = {**env, "SERVICE_HOST": "127.0.0.1", "SERVICE_PORT": port}
    api = [tool("training"), "serve", "--port", str(settings.training_port)]
    edge_env = caddy_env(
        edge,
        service_port=service.service_port,
        max_body_bytes=service.max_body_bytes,
        service_workers=service.service_workers,
        training_port=settings.training_port,
        max_upload_mb=settings.training_max_upload_mb,
    )
    return {
        "service": lambda log: spawn_logged(serve, service_env, log),
        "training": lambda log: spawn_logged(api, env, log),
        "caddy": lambda log: start_caddy(edge_env, log),
    }


def _private(data_dir: Path) -> None:
    """Everything `training up` makes is its user's alone (the run store, uploads, logs, keys),
    as under the systemd units (UMask=0077): the children inherit the mask."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    if data_dir.stat().st_uid == os.geteuid():
        data_dir.chmod(0o700)


def _prepare(settings: ServerSettings, report: Reporter, say: Say) -> BuiltBento:
    """The run store at its head, a production model (trained if there is none), its bento."""
    db = get_database(settings)
    revision.upgrade(db)
    say(f"run store at revision {revision.current_revision(db)}")
    tag = ensure_production_model(settings, Registry(db), report, say)
    built = build(tag, report, alias="production")
    say(f"bento {built.bento_tag} (archive {built.archive})")
    return built


def start(
    settings: ServerSettings,
    service: ServiceSettings,
    edge: EdgeSettings,
    report: Reporter,
    say: Say,
) -> Started:
    _private(settings.data_dir)
    require_free(
        {
            "HTTPS_PORT": edge.https_port,
            "HTTP_PORT": edge.http_port,
            "SERVICE_PORT": service.service_port,
            "TRAINING_PORT": settings.training_port,
        }
    )
    built = _prepare(settings, report, say)
    import bentoml

    schema = ModelCard.from_stored(bentoml.models.get(built.model_tag)).features
    keys = KeyRing(settings.keys_path)
    predict_key = _rotate_key(keys, "make-up:predict", "predict")
    admin_key = _rotate_key(keys, "make-up:admin", "admin")
    logs_dir = settings.data_dir / "logs"
    logs = {name: logs_dir / f"{name}.log" for name in ("service", "training", "caddy")}
    spawns = _children(built, settings, service, edge)
    children = Supervisor(spawns, logs, say, stop_strays=frozenset({"service"}))
    try:
        children.start()
        started = Started(
            edge.url(),
            ca_certificate(edge.caddy_data),
            predict_key,
            admin_key,
            example_row(schema),
            logs,
            children,
        )
        wait_until_served(started)
    except BaseException:
        children.stop()
        raise
    return started


def run_until_stopped(started: Started, say: Say) -> int:
    """Stay in the foreground, restarting a child that dies; Ctrl-C or SIGTERM stops them all
    cleanly (exit 0)."""
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            started.children.heal()
            time.sleep(0.2)
        say("stopping the services and Caddy ...")
        started.children.stop()
        say("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
