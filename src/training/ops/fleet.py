"""The prediction service's instances behind the edge: slots, starting, draining, stopping.

The edge lists every slot port as an upstream (``RolloutSettings.slot_ports``: two groups of
SERVICE_REPLICAS) and routes round-robin to those its active health checks find ready, so
instances come and go without touching Caddy's configuration:
- an empty slot refuses connections: it is marked down, and a request that was on its way is
  retried on another upstream (dial failures are retried, see the Caddyfile);
- an instance's hold file places it in one of the edge's pools (``place``): none, the stable
  pool; "canary", a canary step's pool; empty, neither: its health checks answer 503 and the
  edge sends it nothing. A new instance starts held and is placed only once it answered the
  rollout's smoke prediction, so a version that cannot answer never sees a request from
  outside;
- an instance to be stopped is held again (drained): the edge stops sending it new requests
  within ``EDGE_NOTICE_S``, then SIGTERM lets it finish the requests it has (uvicorn's
  graceful shutdown).

An instance runs as SERVICE_RUNTIME says (``Runtime``): a `bentoml serve` process
(``ProcessRuntime``) or a container of the bento's image (``training.ops.container``); the
slots, the hold files and the rollout are the same for both.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from training.ops.edge import EDGE_NOTICE_S, SERVICE_KEEP_ALIVE_S
from training.ops.processes import spawn_logged, tool
from training.ops.supervisor import Say, Spawn, Supervisor, tail


class InstanceFailed(Exception):
    """A new instance did not start, get ready or answer as it should."""


@dataclass(frozen=True)
class Instance:
    slot: int
    port: int
    bento_tag: str
    model_tag: str

    @property
    def name(self) -> str:
        return f"service-{self.slot}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Runtime(Protocol):
    """How an instance runs (SERVICE_RUNTIME)."""

    def prepare(self, bento_tag: str, note: Say) -> None:
        """What must exist before an instance of the bento starts (its image, say)."""

    def command(self, instance: Instance, slot_dir: Path) -> tuple[list[str], dict[str, str]]:
        """The command that serves ``instance`` in the foreground, and its environment; it
        reads its hold file in ``slot_dir``."""
        ...

    def hand_over(self, path: Path) -> None:
        """``path`` (the slot folder, a hold file) is for the instance to read."""

    def refresh(self) -> None:
        """Keep what the instances read in step with this host (run every second)."""

    def removed(self, instance: Instance) -> None:
        """The instance's command stopped: nothing of it may be left."""


@dataclass
class ProcessRuntime:
    """`bentoml serve` of the bento from BentoML's store, in a BentoML home per slot that
    shares the model and bento stores: every `bentoml serve` empties its home's Prometheus
    folder when it starts, which would wipe the metrics of an instance still serving beside
    it."""

    env: dict[str, str]  # keys, limits, BENTOML_HOME

    def prepare(self, bento_tag: str, note: Say) -> None:
        pass

    def command(self, instance: Instance, slot_dir: Path) -> tuple[list[str], dict[str, str]]:
        args = [tool("bentoml"), "serve", instance.bento_tag, "--host", "127.0.0.1"]
        args += ["--port", str(instance.port)]
        args += ["--timeout-keep-alive", str(SERVICE_KEEP_ALIVE_S)]
        env = {
            **self.env,
            "BENTOML_HOME": str(self._home(slot_dir)),
            "SERVICE_HOST": "127.0.0.1",
            "SERVICE_PORT": str(instance.port),
            "SERVICE_HOLD_FILE": str(slot_dir / "hold"),
        }
        return args, env

    def _home(self, slot_dir: Path) -> Path:
        shared = Path(self.env.get("BENTOML_HOME") or Path.home() / "bentoml")
        home = slot_dir / "bentoml"
        home.mkdir(parents=True, exist_ok=True)
        for store in ("models", "bentos"):
            (shared / store).mkdir(parents=True, exist_ok=True)
            link = home / store
            if not link.is_symlink():
                link.symlink_to(shared / store, target_is_directory=True)
        return home

    def hand_over(self, path: Path) -> None:
        pass

    def refresh(self) -> None:
        pass

    def removed(self, instance: Instance) -> None:
        pass


class Fleet:
    def __init__(
        self,
        supervisor: Supervisor,
        ports: list[int],
        runtime: Runtime,
        run_dir: Path,
        logs_dir: Path,
    ) -> None:
        self.supervisor = supervisor
        self.ports = ports
        self.replicas = len(ports) // 2
        self.runtime = runtime
        self.run_dir = run_dir
        self.logs_dir = logs_dir
        self.serving: list[Instance] = []
        self.started: dict[int, Instance] = {}  # by slot: every instance not stopped yet

    def slot_dir(self, slot: int) -> Path:
        return self.run_dir / f"slot-{slot}"

    def hold_file(self, slot: int) -> Path:
        return self.slot_dir(slot) / "hold"

    def log(self, slot: int) -> Path:
        return self.logs_dir / f"service-{slot}.log"

    def _hold(self, slot: int, pool: str) -> None:
        hold = self.hold_file(slot)
        hold.write_text(pool)
        self.runtime.hand_over(hold)

    def start(self, bento_tag: str, model_tag: str) -> list[Instance]:
        """SERVICE_REPLICAS instances of the bento on the group of slots not serving now, held
        out of rotation until ``admit``."""
        busy = {i.slot for i in self.serving}
        group = 1 if busy & set(range(self.replicas)) else 0
        started: list[Instance] = []
        for slot in range(group * self.replicas, (group + 1) * self.replicas):
            instance = Instance(slot, self.ports[slot], bento_tag, model_tag)
            folder = self.slot_dir(slot)
            folder.mkdir(parents=True, exist_ok=True)
            self.runtime.hand_over(folder)
            self._hold(slot, "")  # held: in no pool of the edge until placed
            args, env = self.runtime.command(instance, folder)
            self.started[slot] = instance
            self.supervisor.add(instance.name, _spawner(args, env), self.log(slot))
            started.append(instance)
        return started

    def wait_alive(self, instances: list[Instance], timeout: float) -> None:
        """Every instance's worker answers (``/livez``: the model is loaded, as the worker
        serves only then); InstanceFailed if one exits or the time is up."""
        deadline = time.monotonic() + timeout
        waiting = list(instances)
        while waiting:
            for instance in list(waiting):
                child = self.supervisor.children.get(instance.name)
                if child is None or child.crashes or child.exit_code is not None:
                    raise InstanceFailed(
                        f"{instance.name} ({instance.bento_tag}) exited while starting; its log "
                        f"ends with:\n{tail(self.log(instance.slot), 8)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{instance.url}/livez", timeout=2).status_code == 200:
                        waiting.remove(instance)
            if waiting and time.monotonic() > deadline:
                raise InstanceFailed(
                    f"{waiting[0].name} ({waiting[0].bento_tag}) not up after {timeout:.0f} s"
                )
            if waiting:
                time.sleep(0.25)

    def place(self, instances: list[Instance], pool: str | None) -> None:
        """Into the edge's stable pool (None), a canary step's ("canary"), or neither (""):
        the next health checks of the edge's pools see it (see the hold file in
        ``training.serving.http``)."""
        for instance in instances:
            if pool is None:
                self.hold_file(instance.slot).unlink(missing_ok=True)
            else:
                self._hold(instance.slot, pool)

    def admit(self, instances: list[Instance]) -> None:
        """Into rotation as the instances that serve."""
        self.place(instances, None)
        self.serving += [i for i in instances if i not in self.serving]

    def retire(self, instances: list[Instance]) -> None:
        """Drain, then stop: the edge sends them nothing new, their requests in flight end."""
        if not instances:
            return
        self.place(instances, "")
        time.sleep(EDGE_NOTICE_S)
        self.stop(instances)

    def stop(self, instances: list[Instance]) -> None:
        for instance in instances:
            self.supervisor.remove(instance.name)
            self.runtime.removed(instance)
            self.hold_file(instance.slot).unlink(missing_ok=True)
            self.started.pop(instance.slot, None)
        self.serving = [i for i in self.serving if i not in instances]

    def close(self) -> None:
        """Every instance stopped and gone (the stack stops)."""
        self.stop(list(self.started.values()))


def _spawner(args: list[str], env: dict[str, str]) -> Spawn:
    return lambda log: spawn_logged(args, env, log)
