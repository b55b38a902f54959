"""The running stack follows the registry: when the served alias moves, its target goes live.

A rollout of a model tag (``Controller.deploy``), recorded in the deployments table:
1. the bento for the exact tag: built once per tag while the stack runs, reused after (so a
   rollback starts at once);
2. SERVICE_REPLICAS new instances on the free group of slots, beside the old ones;
3. each up and answering a smoke prediction made from its own model card, with its own model
   tag in ``X-Model-Tag``, while held out of the edge's rotation (``fleet``);
4. admitted: the edge's health checks find them ready; then the old instances drain and stop.
A version that fails any step never takes traffic: its instances are stopped, the old ones
keep serving, and the row says FAILED with the error. The alias is polled every ``POLL_S``;
a failed target is tried again only when the alias moves again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from training.errors import NotFound, UserError
from training.ops.bento import build, stored_bento
from training.ops.container import ContainerRuntime
from training.ops.edge import EDGE_NOTICE_S, canary_share_file, write_canary_share
from training.ops.fleet import Fleet, Instance, InstanceFailed, ProcessRuntime, Runtime
from training.ops.keys import KeyRing
from training.ops.processes import keyed_env
from training.ops.supervisor import Say, Supervisor
from training.serving.card import ModelCard
from training.serving.features import FeatureSchema
from training.settings import RolloutSettings, ServiceSettings, Settings
from training.store.db import Database
from training.store.deployments import Deployments
from training.store.records import DeploymentInfo, DeploymentResult
from training.store.registry import Registry

POLL_S = 1.0


class RolloutFailed(UserError):
    """A version that did not go live; the one before it keeps serving."""


def example_row(schema: FeatureSchema) -> dict[str, Any]:
    """A plausible row: mid-range numbers, the first category (the smoke prediction, the
    printed curl)."""
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


def model_card(tag: str) -> ModelCard:
    import bentoml

    return ModelCard.from_stored(bentoml.models.get(tag))


def smoke(instance: Instance, key: str, timeout: float) -> None:
    """One prediction from the instance's own model card, answered by that model (asked again
    while the instance says it is still starting: a 503)."""
    body = {"instances": [example_row(model_card(instance.model_tag).features)]}
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.post(
                f"{instance.url}/predict",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise InstanceFailed(f"smoke prediction: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if answer.status_code != 200:
        raise InstanceFailed(f"smoke prediction: HTTP {answer.status_code}: {answer.text[:300]}")
    served = answer.headers.get("x-model-tag")
    if served != instance.model_tag:
        raise InstanceFailed(f"smoke prediction answered by {served}, not {instance.model_tag}")


@dataclass
class Controller:
    settings: RolloutSettings
    fleet: Fleet
    db: Database
    smoke_key: str
    say: Say
    bentos: dict[str, str] = field(default_factory=dict)  # model tag -> bento tag, this run
    seen: tuple[str, datetime] | None = None  # the alias's target and time last acted on
    # `training controller` serves bentos imported into the store (ops build them elsewhere);
    # `training up` builds from the checkout it runs in, so its code is what serves.
    use_stored_bentos: bool = False
    canary: Canary | None = None  # the canary step running now
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def of(
        cls,
        settings: Settings,
        service: ServiceSettings,
        rollout: RolloutSettings,
        db: Database,
        supervisor: Supervisor,
        keys: KeyRing,
    ) -> Controller:
        """The controller of this host's instances: slots from SERVICE_PORT, files under
        DATA_DIR, run as SERVICE_RUNTIME says, a smoke-prediction key of its own (renewed at
        each start)."""
        env, run_dir = keyed_env(settings.keys_path), settings.data_dir / "run"
        runtime: Runtime = ProcessRuntime(env)
        if rollout.service_runtime == "container":
            runtime = ContainerRuntime(
                env, settings.keys_path, run_dir, settings.container_cache_dir
            )
        fleet = Fleet(
            supervisor,
            rollout.slot_ports(service.service_port),
            runtime,
            run_dir,
            settings.data_dir / "logs",
        )
        smoke_key = keys.renew("rollout:smoke", "predict")
        controller = cls(rollout, fleet, db, smoke_key, supervisor.say)
        write_canary_share(controller.share_file, None)  # no canary step left from before
        return controller

    def run(self) -> int:
        """Heal the children and follow the alias until Ctrl-C or SIGTERM, then stop them all
        (exit 0)."""
        stopping = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stopping.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        supervisor = self.fleet.supervisor
        following = threading.Thread(target=self.follow, name="rollout", daemon=True)
        following.start()
        try:
            while not stopping.wait(0.2):
                supervisor.heal()
            self.say("stopping ...")
            self.stopping.set()
            supervisor.stop()
            following.join(timeout=60)
            supervisor.stop()  # what a rollout started while the first stop ran
            self.fleet.close()  # nothing of an instance left (a container, say)
            self.say("stopped")
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def share_file(self) -> Path:
        return canary_share_file(self.fleet.run_dir.parent)

    @property
    def live_tag(self) -> str | None:
        return self.fleet.serving[0].model_tag if self.fleet.serving else None

    def _bento(self, tag: str, note: Say) -> str:
        if tag not in self.bentos and self.use_stored_bentos:
            stored = stored_bento(tag)
            if stored is not None:
                note(f"using the stored bento {stored}")
                self.bentos[tag] = stored
        if tag not in self.bentos:
            note("building its bento")
            built = build(tag, lambda stage, _: None, alias=self.settings.serve_alias)
            self.bentos[tag] = built.bento_tag
        return self.bentos[tag]

    def _note(self, row: int, from_tag: str | None, tag: str) -> Say:
        alias = self.settings.serve_alias

        def note(step: str) -> None:
            self.say(f"rollout {row} of {alias} ({from_tag or 'nothing'} -> {tag}): {step}")

        return note

    def _launch(self, tag: str, row: int, note: Say) -> list[Instance]:
        """New instances of ``tag``, up and past their smoke prediction, still held out of
        rotation; RolloutFailed, recorded on ``row``, if they cannot serve."""
        new: list[Instance] = []
        try:
            bento = self._bento(tag, note)
            self.fleet.runtime.prepare(bento, note)
            if self.stopping.is_set():  # a stop during the build: start nothing more
                raise InstanceFailed("the stack stopped during the rollout")
            note(f"starting {self.fleet.replicas} instance(s) of {bento}")
            new = self.fleet.start(bento, tag)
            self.fleet.wait_alive(new, self.settings.rollout_ready_timeout_s)
            note("up; smoke prediction")
            for instance in new:
                smoke(instance, self.smoke_key, self.settings.rollout_ready_timeout_s)
            if self.stopping.is_set():
                raise InstanceFailed("the stack stopped during the rollout")
        except Exception as exc:
            self.fleet.stop(new)
            why = "the stack stopped during the rollout" if self.stopping.is_set() else str(exc)
            Deployments(self.db).ended(row, DeploymentResult.FAILED, why)
            note(f"FAILED, {self.live_tag or 'nothing'} keeps serving: {why}")
            raise RolloutFailed(f"rollout of {tag} failed: {why}") from exc
        return new

    def _switch(self, new: list[Instance], row: int, note: Say, started: float) -> DeploymentInfo:
        """Only ``new`` serves once the old instances drained and stopped."""
        old = [i for i in self.fleet.serving if i not in new]
        self.fleet.admit(new)
        time.sleep(EDGE_NOTICE_S)  # the edge's health checks find the new instances ready
        if old:
            note(f"draining and stopping {len(old)} old instance(s)")
        self.fleet.retire(old)
        live = Deployments(self.db).went_live(row)
        note(f"live in {time.monotonic() - started:.1f} s")
        return live

    def deploy(self, tag: str, requested_by: str | None) -> DeploymentInfo:
        """Roll ``tag`` out (module docstring); RolloutFailed, recorded, if it cannot serve."""
        deployments, alias = Deployments(self.db), self.settings.serve_alias
        from_tag = self.live_tag or deployments.live_tag(alias)
        row = deployments.begin(alias, from_tag, tag, requested_by)
        note, started = self._note(row, from_tag, tag), time.monotonic()
        return self._switch(self._launch(tag, row, note), row, note, started)

    def check(self) -> None:
        """Act on what changed since the last look: the alias moved (roll its target out, or
        finish the canary it points to now), a canary was asked for or aborted."""
        try:
            last = Registry(self.db).last_move(self.settings.serve_alias)
        except NotFound:
            return
        target = last.to_tag
        state = (target, last.moved_at)  # a move sets the alias's target and time together
        moved, self.seen = state != self.seen, state
        if self.canary is not None:
            self.canary = self.canary.follow(self, target, moved)
        if moved and target != self.live_tag and self.canary is None:
            # A failure is recorded and said; the alias must move again for another try.
            with contextlib.suppress(RolloutFailed):
                self.deploy(target, last.requested_by)
        if self.canary is None:
            deployments = Deployments(self.db)
            asked = deployments.open_canary(self.settings.serve_alias)
            if asked is not None and last.moved_at > asked.started_at:
                why = f"the alias moved to {target} before the canary started"
                deployments.ended(asked.id, DeploymentResult.ABORTED, why)
            elif asked is not None:
                with contextlib.suppress(RolloutFailed):
                    self.canary = Canary.start(self, asked)

    def follow(self) -> None:
        """Check the alias every POLL_S until ``stopping`` is set (a thread of `training up`)."""
        while not self.stopping.wait(POLL_S):
            try:
                self.fleet.runtime.refresh()
                self.check()
            except Exception as exc:  # noqa: BLE001 - a busy store must not end the following
                self.say(f"following {self.settings.serve_alias}: {type(exc).__name__}: {exc}")


@dataclass
class Canary:
    """A canary step: the new version's instances beside the old ones, in the edge's canary
    pool, taking ``percent`` of the requests (the share file the edge reads per request),
    until the alias moves to it (promote: the same switch as a rollout) or the step is aborted
    (the share back to none, its instances drain and stop). The edge is never reconfigured."""

    row: int
    tag: str
    percent: int
    instances: list[Instance]

    @classmethod
    def start(cls, controller: Controller, asked: DeploymentInfo) -> Canary:
        percent = asked.canary_percent or 0
        note = controller._note(asked.id, controller.live_tag, asked.to_tag)
        if not controller.fleet.serving:
            why = "a canary step needs a version that serves already"
            Deployments(controller.db).ended(asked.id, DeploymentResult.FAILED, why)
            note(f"FAILED: {why}")
            raise RolloutFailed(why)
        new = controller._launch(asked.to_tag, asked.id, note)
        controller.fleet.place(new, "canary")
        time.sleep(EDGE_NOTICE_S)  # the canary pool's health checks find them ready
        write_canary_share(controller.share_file, percent)
        note(f"canary: {percent}% of the requests; `training canary promote|abort` ends it")
        return cls(asked.id, asked.to_tag, percent, new)

    def follow(self, controller: Controller, target: str, moved: bool) -> Canary | None:
        """Itself while it goes on; None once it ended."""
        note = controller._note(self.row, controller.live_tag, self.tag)
        if moved and target == self.tag:  # `training canary promote` moved the alias here
            write_canary_share(controller.share_file, None)
            controller._switch(self.instances, self.row, note, time.monotonic())
            return None
        result = Deployments(controller.db).get(self.row).result
        if not moved and result is DeploymentResult.CANARY:
            return self
        note(f"ending the canary: {'the alias moved' if moved else result.value}")
        write_canary_share(controller.share_file, None)
        controller.fleet.retire(self.instances)
        if result is DeploymentResult.CANARY:
            why = f"the alias moved to {target}"
            Deployments(controller.db).ended(self.row, DeploymentResult.ABORTED, why)
        return None
