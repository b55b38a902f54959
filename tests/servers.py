"""Real servers for tests: free ports, readiness by polling, stopped by pid with no orphans.

`bentoml serve` puts each worker in a process group of its own, so a server is stopped by
SIGTERM to the `bentoml serve` process itself, and its whole process tree (noted before the
signal) is checked to be gone afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


#: Debian's Chromium (apt), which Playwright drives: no browser of its own is downloaded.
CHROMIUM = Path("/usr/bin/chromium")
#: As this machine needs it (DESIGN.md, "Browser tests"): headless, and none of the background
#: connections its closed network would refuse; no sandbox for root.
CHROMIUM_FLAGS = [
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_reason() -> str | None:
    """None when Playwright and Chromium are both here; otherwise what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev group: make install)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install chromium (`make test` does, as root)"
    return None


def launch_chromium(playwright: Any, *flags: str) -> Any:
    root = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, *root, *flags]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"{what}: not ready after {timeout} s\n{tail}")


def stop_process_tree(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process, wait, then require that nothing of its tree outlives it."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"pid {proc.pid} ignored SIGTERM for {timeout} s") from None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family
    ):
        time.sleep(0.1)
    survivors = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived pid {proc.pid}: {survivors}"


@contextmanager
def running(
    args: list[str],
    *,
    env: dict[str, str],
    log: Path,
    ready_url: str,
    cwd: Path = REPO,
    timeout: float = 120,
) -> Iterator[Server]:
    handle = log.open("wb")
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: httpx.get(ready_url, timeout=2).status_code == 200,
            timeout,
            " ".join(args[:3]),
            proc,
            log,
        )
        yield Server(proc, ready_url.rsplit("/", 1)[0], log)
    finally:
        stop_process_tree(proc)
        handle.close()


def in_process(tag: str, method: str, rows: list[dict[str, Any]]) -> list[Any]:
    """What the model in BentoML's store says of ``rows``, loaded here (the truth a served
    answer is compared with)."""
    import bentoml

    from training.serving.features import FeatureSchema

    model = bentoml.models.get(tag)
    schema = FeatureSchema.model_validate(model.info.metadata["features"])
    pipeline = bentoml.sklearn.load_model(model)
    result: list[Any] = getattr(pipeline, method)(schema.to_matrix(rows)).tolist()
    return result


def serve_model(
    model_tag: str, *, bentoml_home: Path, log: Path, port: int | None = None, **env: str
) -> AbstractContextManager[Server]:
    """`bentoml serve` of src/service.py (development serving) for one model tag.

    Each server gets a BentoML home of its own that shares the models: every `bentoml serve`
    empties its home's Prometheus folder when it starts, so servers sharing one home would
    lose each other's metrics."""
    port = port or free_port()
    home = log.parent / f"bentoml-home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(bentoml_home / "models", target_is_directory=True)
    return running(
        [
            str(BIN / "bentoml"),
            "serve",
            "service:Prediction",
            "--working-dir",
            str(REPO / "src"),
            "--arg",
            f"model_tag={model_tag}",
            "--port",
            str(port),
        ],
        env=base_env(BENTOML_HOME=str(home), **{"SERVICE_WORKERS": "1", **env}),
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )


@contextmanager
def caddy(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Caddy with the repository's Caddyfile, ready once its local CA exists and HTTPS answers."""
    from training.ops.edge import ca_certificate, start_caddy

    proc = start_caddy(env, log)
    ca = ca_certificate(Path(env["CADDY_DATA_DIR"]))
    url = f"https://127.0.0.1:{env['HTTPS_PORT']}/livez"
    try:

        def answers() -> bool:
            tls = ssl.create_default_context(cafile=ca)
            return httpx.get(url, verify=tls, timeout=10).status_code > 0

        wait_until(answers, 60, "caddy", proc, log)
        yield proc
    finally:
        stop_process_tree(proc)


def serve_training(
    data_dir: Path, log: Path, port: int | None = None, **env: str
) -> AbstractContextManager[Server]:
    """`training serve` on its own data folder and BentoML home (beside the data folder)."""
    port = port or free_port()
    return running(
        [str(BIN / "training"), "serve", "--port", str(port)],
        env=base_env(DATA_DIR=str(data_dir), BENTOML_HOME=str(data_dir.parent / "bentoml"), **env),
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )


@dataclass(frozen=True)
class Answer:
    sent: float  # time.time() when the request left
    seconds: float
    status: int | str  # the HTTP status, or the exception's name for a request that failed
    tag: str | None  # X-Model-Tag


class Traffic:
    """Keep-alive clients, each posting one prediction after another until stopped; every
    answer is kept (a context manager: the clients run inside the ``with``)."""

    def __init__(
        self, url: str, key: str, tls: ssl.SSLContext, body: object, clients: int = 4
    ) -> None:
        self.url, self.key, self.tls, self.body, self.clients = url, key, tls, body, clients
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(verify=self.tls, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                sent, started = time.time(), time.perf_counter()
                try:
                    answer = client.post(self.url, json=self.body)
                    status: int | str = answer.status_code
                    tag = answer.headers.get("x-model-tag")
                except httpx.HTTPError as exc:
                    status, tag = type(exc).__name__, None
                self.answers.append(Answer(sent, time.perf_counter() - started, status, tag))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def tags_after(self, moment: float) -> set[str | None]:
        return {a.tag for a in self.answers if a.sent > moment and a.status == 200}


def free_slot_base(slots: int) -> int:
    """A port P with P, P+2, ... (``slots`` ports) all free: the prediction service's slots."""
    for _ in range(200):
        base = free_port()
        ports = [base + 2 * n for n in range(slots)]
        if ports[-1] > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in ports:
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError(f"no {slots} free ports two apart")


@dataclass
class Stack:
    """A running `training up`, as its printout describes it."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    data: Path
    out: Path
    err: Path
    printed: str
    url: str
    tls: ssl.SSLContext
    predict_key: str
    admin_key: str

    def _running(self, marker: str) -> list[psutil.Process]:
        """The live children of `training up` whose command line holds ``marker`` (one that
        just exited, a zombie until its parent reaps it, is not one of them)."""
        found = []
        for process in psutil.Process(self.proc.pid).children():
            try:
                if marker in " ".join(process.cmdline()):
                    found.append(process)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return found

    def child(self, marker: str) -> psutil.Process:
        """The live child of `training up` whose command line holds ``marker``."""
        for process in self._running(marker):
            return process
        raise AssertionError(f"no child running {marker!r}")

    def instances(self) -> list[psutil.Process]:
        """The `bentoml serve` processes (prediction instances) it runs now."""
        return self._running("bentoml serve")

    def kill_instance(self) -> tuple[str, float]:
        """SIGKILL one instance with its workers: its port and when it died."""
        victim = self.instances()[0]
        port = victim.cmdline()[victim.cmdline().index("--port") + 1]
        family = [victim, *victim.children(recursive=True)]
        killed = time.time()
        for process in family:
            process.send_signal(signal.SIGKILL)
        return port, killed

    @property
    def example(self) -> object:
        """The body of the printed curl's prediction."""
        args = shlex.split(self.curl(0))
        return json.loads(args[args.index("-d") + 1])

    def predicts(self) -> bool:
        """The printed curl's prediction, sent through the edge, answers 200."""
        headers = {"Authorization": f"Bearer {self.predict_key}"}
        response = httpx.post(
            f"{self.url}/predict", json=self.example, headers=headers, verify=self.tls
        )
        return response.status_code == 200

    def curl(self, index: int) -> str:
        return [line for line in self.printed.splitlines() if line.startswith("curl ")][index]

    def training_ready(self) -> bool:
        return httpx.get(f"{self.url}/training/readyz", verify=self.tls).status_code == 200

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `training` command against this stack's run store and model store."""
        return subprocess.run(
            [str(BIN / "training"), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )


@contextmanager
def up_stack(tmp: Path, replicas: int = 1, **env_overrides: str) -> Iterator[Stack]:
    """`training up` on its own folders and ports, once it printed its curl; stopped after."""
    env = base_env(
        DATA_DIR=str(tmp / "data"),
        BENTOML_HOME=str(tmp / "bentoml"),
        HTTPS_PORT=str(free_port()),
        HTTP_PORT=str(free_port()),
        SERVICE_PORT=str(free_slot_base(2 * replicas)),
        SERVICE_REPLICAS=str(replicas),
        TRAINING_PORT=str(free_port()),
        SERVICE_WORKERS="1",
        **env_overrides,
    )
    out_path, err_path = tmp / "up.out", tmp / "up.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "training"), "up"], env=env, cwd=REPO, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + 300
        while "curl " not in out_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "training up printed no curl"
            time.sleep(0.5)
        time.sleep(0.5)  # the rest of the printout
        printed = out_path.read_text()
        ca = next(line.split()[-1] for line in printed.splitlines() if "CA file" in line)
        key = next(line.split()[2] for line in printed.splitlines() if "API key" in line)
        admin = printed.split("admin key ")[1].split(")")[0]
        yield Stack(
            proc,
            env,
            tmp / "data",
            out_path,
            err_path,
            printed,
            f"https://localhost:{env['HTTPS_PORT']}",
            ssl.create_default_context(cafile=ca),
            key,
            admin,
        )
    finally:
        if proc.poll() is None:
            stop_process_tree(proc)


def cli_json(env: dict[str, str], *args: str) -> Any:
    """A `training` command's ``--json`` document (its run must succeed)."""
    done = subprocess.run(
        [str(BIN / "training"), *args, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def run_podman(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=180, env=env)


def production_image(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """An iris model trained into stores under ``tmp``, promoted to production, and its image:
    the stores' environment and `training containerize`'s document."""
    env = base_env(DATA_DIR=str(tmp / "data"), BENTOML_HOME=str(tmp / "bentoml"))
    tag = cli_json(env, "train", "--dataset", "iris", "--model", "logistic_regression", "--cv", "0")
    cli_json(env, "promote", tag["model_tag"], "--alias", "production")
    return env, cli_json(env, "containerize", "--alias", "production")


@dataclass
class Cluster:
    """`training scheduler` and its `training worker`s, each worker in a folder of its own as
    if on a host of its own: an empty BentoML home, no data folder, a run store URL that
    points nowhere, and an address the scheduler could not dial (nothing may need it)."""

    address: str
    root: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]]

    def worker_env(self, name: str) -> dict[str, str]:
        home = self.root / name
        return base_env(
            BENTOML_HOME=str(home / "bentoml"),
            DATA_DIR=str(home / "no-data"),
            DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/nowhere",
            TRAINING_JOB_MEMORY_MB="1536",
        )

    def start_worker(self, name: str) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        unreachable = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
        with (folder / "worker.log").open("ab") as log:
            self.workers[name] = subprocess.Popen(
                [
                    str(BIN / "training"),
                    "worker",
                    self.address,
                    "--name",
                    name,
                    "--contact-address",
                    unreachable,
                ],
                env=self.worker_env(name),
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def names(self) -> set[str]:
        """The workers the scheduler has now."""
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            return {str(w["name"]) for w in client.scheduler_info()["workers"].values()}

    def wait_for(self, names: set[str], timeout: float = 60) -> None:
        wait_until(lambda: self.names() == names, timeout, f"workers {sorted(names)}")

    def kill_worker(self, name: str) -> None:
        """The worker's host goes away: its nanny and its worker process, SIGKILL."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def files_of(self, name: str) -> list[Path]:
        """What the worker left in its own folder, but its log."""
        return [p for p in (self.root / name).rglob("*") if p.name != "worker.log"]


@contextmanager
def cluster(root: Path, names: tuple[str, ...] = ("w1", "w2")) -> Iterator[Cluster]:
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [str(BIN / "training"), "scheduler", "--port", str(port)],
        env=base_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    nodes = Cluster(f"tcp://127.0.0.1:{port}", root, scheduler, {})
    try:
        for name in names:
            nodes.start_worker(name)
        nodes.wait_for(set(names), timeout=90)
        yield nodes
    finally:
        for name in list(nodes.workers):
            proc = nodes.workers.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        stop_process_tree(scheduler)
        log.close()
