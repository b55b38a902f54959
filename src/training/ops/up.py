"""The main job (`make up` -> `training up`): from a fresh checkout to a prediction over HTTPS.

Upgrade the run store; train and promote the default model if the served alias (SERVE_ALIAS,
`production`) points nowhere; build the bento; make API keys for this start; start the
training service and Caddy, then roll the alias's target out (``rollout``: SERVICE_REPLICAS
instances on loopback); wait until a prediction succeeds through HTTPS with the local CA; print
how to call it; stay in the foreground, restarting a child that dies and rolling out each new
target of the alias, until Ctrl-C or SIGTERM, then stop them all.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from training.errors import NotFound, UserError
from training.learning.pipeline import train
from training.learning.request import TrainRequest
from training.ops.bento import BuiltBento, build
from training.ops.edge import (
    ca_certificate,
    caddy_env,
    require_free,
    start_caddy,
)
from training.ops.image import require_tools
from training.ops.keys import KeyRing
from training.ops.processes import keyed_env, spawn_logged, tool
from training.ops.rollout import Controller, example_row, model_card
from training.ops.supervisor import Say, Spawn, Supervisor, tail
from training.progress import Reporter
from training.settings import (
    EdgeSettings,
    RolloutSettings,
    ServerSettings,
    ServiceSettings,
    Settings,
)
from training.store import revision
from training.store.db import Database, get_database
from training.store.deployments import Deployments
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
    logs_dir: Path
    children: Supervisor
    controller: Controller

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
    settings: Settings, registry: Registry, alias: str, report: Reporter, say: Say
) -> str:
    try:
        return registry.get_alias(alias).model_tag
    except NotFound:
        pass
    say(f"no {alias} model yet: training the default one (iris, logistic_regression)")
    result = train(DEFAULT_MODEL, settings, RunStore(registry.db), report)
    assert result.model_tag is not None
    registry.promote(result.model_tag, alias, requested_by="training up")
    say(f"promoted {result.model_tag} to {alias}")
    return result.model_tag


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
                log = started.logs_dir / f"{name}.log"
                raise UserError(
                    f"{name} exited with {proc.returncode} while starting; its log "
                    f"({log}) ends with:\n{tail(log)}"
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


def _edge_env(
    settings: ServerSettings, service: ServiceSettings, edge: EdgeSettings, ports: list[int]
) -> dict[str, str]:
    """Caddy in front of the training service and of every slot of the prediction service
    (whose instances the rollout starts, see ``fleet``)."""
    return caddy_env(
        edge,
        service_ports=ports,
        max_body_bytes=service.max_body_bytes,
        service_workers=service.service_workers,
        training_port=settings.training_port,
        max_upload_mb=settings.training_max_upload_mb,
    )


def _children(settings: ServerSettings, edge_env: dict[str, str]) -> dict[str, Spawn]:
    """How to start the training service and Caddy."""
    env = keyed_env(settings.keys_path)
    api = [tool("training"), "serve", "--port", str(settings.training_port)]
    return {
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


def _prepare(
    settings: ServerSettings, alias: str, report: Reporter, say: Say
) -> tuple[Database, BuiltBento]:
    """The run store at its head, a model behind the alias (trained if there is none), its
    bento."""
    db = get_database(settings)
    revision.upgrade(db)
    say(f"run store at revision {revision.current_revision(db)}")
    closed = Deployments(db).close_unfinished("the stack stopped during the rollout")
    if closed:
        say(f"deployments {closed} were left unfinished by a stack that stopped: marked failed")
    tag = ensure_production_model(settings, Registry(db), alias, report, say)
    built = build(tag, report, alias=alias)
    say(f"bento {built.bento_tag} (archive {built.archive})")
    return db, built


def start(
    settings: ServerSettings,
    service: ServiceSettings,
    edge: EdgeSettings,
    rollout: RolloutSettings,
    report: Reporter,
    say: Say,
) -> Started:
    _private(settings.data_dir)
    if rollout.service_runtime == "container":
        require_tools()  # before anything is trained or built
    ports = rollout.slot_ports(service.service_port)
    require_free(
        {
            "HTTPS_PORT": edge.https_port,
            "HTTP_PORT": edge.http_port,
            **{f"SERVICE_PORT (slot {n})": port for n, port in enumerate(ports)},
            "TRAINING_PORT": settings.training_port,
        }
    )
    db, built = _prepare(settings, rollout.serve_alias, report, say)
    keys = KeyRing(settings.keys_path)
    predict_key = keys.renew("make-up:predict", "predict")
    admin_key = keys.renew("make-up:admin", "admin")
    logs_dir = settings.data_dir / "logs"
    edge_env = _edge_env(settings, service, edge, ports)
    spawns = _children(settings, edge_env)
    children = Supervisor(spawns, {name: logs_dir / f"{name}.log" for name in spawns}, say)
    controller = Controller.of(settings, service, rollout, db, children, keys)
    controller.bentos[built.model_tag] = built.bento_tag
    try:
        children.start()
        report("starting the prediction service", 0.9)
        controller.deploy(built.model_tag, "training up")
        started = Started(
            edge.url(),
            ca_certificate(edge.caddy_data),
            predict_key,
            admin_key,
            example_row(model_card(built.model_tag).features),
            logs_dir,
            children,
            controller,
        )
        wait_until_served(started)
    except BaseException:
        children.stop()
        controller.fleet.close()
        raise
    return started


def run_until_stopped(started: Started) -> int:
    """Stay in the foreground until Ctrl-C or SIGTERM (see ``Controller.run``)."""
    return started.controller.run()
