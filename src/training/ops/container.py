"""The prediction service in containers: `podman run` of the bento's image, as shipped
(non-root, read-only root, BentoML's home on a tmpfs, API keys mounted read-only, published on
loopback only), and SERVICE_RUNTIME=container, where the rollout's instances are such
containers (``ContainerRuntime``, a ``training.ops.fleet.Runtime``).

What an instance reads from this host is mounted, read-only, as folders, so a file replaced
there (renamed into place) is seen inside: the API-key file, mirrored into the run folder
every second (the real one sits beside the run database, which no container may see), and the
slot's hold file. Both are handed to the image's user (uid 1034), as nothing else may read
them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from training.ops.fleet import Instance
from training.ops.image import (
    BENTO_UID,
    KEYS_FILE,
    SERVICE_PORT,
    WRITABLE_HOME,
    containerize,
    image_name,
    podman_env,
)
from training.ops.supervisor import Say
from training.serving.settings import ServiceSettings

SLOT_DIR = "/home/bentoml/slot"  # the slot folder inside: the hold file
#: Set for the container by its runtime, not taken from this host's environment.
OWN = {
    "SERVICE_HOST",
    "SERVICE_PORT",
    "SERVICE_HOLD_FILE",
    "API_KEYS_FILE",
    "DATA_DIR",
    "REQUIRE_API_KEY",
}


def run_args(
    image: str, name: str, host_port: int, keys_dir: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    """`podman run` of a prediction image, in the foreground, removed when it stops, replacing
    a container of the same name (one a killed stack left); ``extra`` options before the
    image."""
    return [
        "podman",
        "run",
        "--rm",
        "--replace",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        f"{WRITABLE_HOME}:rw,mode=1777",
        "--volume",
        f"{keys_dir}:{Path(KEYS_FILE).parent}:ro",
        "--env",
        "REQUIRE_API_KEY=true",
        "--publish",
        f"127.0.0.1:{host_port}:{SERVICE_PORT}",
        *extra,
        image,
    ]


def hand_over(path: Path) -> None:
    """The image's user owns ``path`` (its mode stays private: 0700 or 0600)."""
    if os.geteuid() == 0:
        os.chown(path, BENTO_UID, BENTO_UID)
    else:  # rootless podman: the container's uids are mapped into the user's range
        subprocess.run(
            ["podman", "unshare", "chown", f"{BENTO_UID}:{BENTO_UID}", str(path)], check=True
        )


def mirror_keys(source: Path, keys_dir: Path) -> None:
    """The key file copied into ``keys_dir`` for the image's user, replaced whole."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    target = keys_dir / Path(KEYS_FILE).name
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        target.unlink(missing_ok=True)  # no keys: the service refuses every request
        return
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    hand_over(partial)
    partial.replace(target)


@dataclass
class ContainerRuntime:
    """SERVICE_RUNTIME=container: each instance is a container of its bento's image."""

    env: dict[str, str]  # this host's settings: the service's are passed on
    keys_path: Path
    run_dir: Path
    cache: Path  # CONTAINER_CACHE_DIR
    _keys_seen: tuple[int, int] | None = field(default=None, init=False)

    @property
    def keys_dir(self) -> Path:
        return self.run_dir / "keys"

    def prepare(self, bento_tag: str, note: Say) -> None:
        note(f"building the image of {bento_tag} (made once)")
        containerize(bento_tag, self.cache, lambda stage, _: None)

    def command(self, instance: Instance, slot_dir: Path) -> tuple[list[str], dict[str, str]]:
        self.refresh()
        extra = ["--volume", f"{slot_dir}:{SLOT_DIR}:ro"]
        extra += ["--env", f"SERVICE_HOLD_FILE={SLOT_DIR}/hold"]
        for name in (n.upper() for n in ServiceSettings.model_fields):
            if name in self.env and name not in OWN:
                extra += ["--env", f"{name}={self.env[name]}"]
        image = image_name(instance.bento_tag)
        args = run_args(image, self.name(instance), instance.port, self.keys_dir, tuple(extra))
        return args, podman_env(self.cache)

    def name(self, instance: Instance) -> str:
        return f"training-prediction-{instance.port}"  # a port is this host's alone

    def hand_over(self, path: Path) -> None:
        hand_over(path)

    def refresh(self) -> None:
        """The key file's mirror follows the real one (a key made or revoked counts within a
        second, as for a process)."""
        try:
            st = self.keys_path.stat()
            seen = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = (0, 0)
        if seen != self._keys_seen:
            mirror_keys(self.keys_path, self.keys_dir)
            self.keys_dir.chmod(0o700)
            hand_over(self.keys_dir)
            self._keys_seen = seen

    def removed(self, instance: Instance) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                ["podman", "rm", "--force", "--ignore", "--time", "10", self.name(instance)],
                env=podman_env(self.cache),
                capture_output=True,
                timeout=60,
                check=False,
            )
