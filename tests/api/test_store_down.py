"""A PostgreSQL run store stopped mid-service: the API answers 503 with Retry-After, the CLI
says so in one line (exit 75), and both recover by themselves once it is back.

The server is a private cluster made by the test (initdb as the postgres user, its own port
and socket folder), never the machine's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from inprocess import QUICK, open_api

from servers import free_port
from training.cli.app import main

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@dataclass
class Cluster:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        assert BIN is not None
        command = [str(BIN / "pg_ctl"), "-D", str(self.data), "-w", *args]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self.ctl("-o", options, "-l", str(self.data / "server.log"), "start")

    def stop(self) -> None:
        self.ctl("-m", "immediate", "stop")


def _missing() -> str | None:
    if BIN is None or not (BIN / "initdb").exists():
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "a private cluster is made as the postgres user: needs root and runuser"
    return None


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    assert BIN is not None
    data = Path(tempfile.mkdtemp(prefix="training-pg-"))
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(BIN / "initdb"), "-D", str(data), "-A", "trust"],
        check=True,
        capture_output=True,
    )
    server = Cluster(data, free_port())
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(data), "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_a_stopped_postgres_is_a_503_then_heals(
    cluster: Cluster, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", cluster.url)
    with open_api(env, database_url=cluster.url) as api:
        assert api.client.post("/runs", json=QUICK).status_code == 202
        cluster.stop()
        for response in (api.client.get("/runs"), api.client.post("/runs", json=QUICK)):
            assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
            assert response.json()["error"].startswith("the run store is busy or unreachable")
            assert response.json()["request_id"]
        assert main(["runs", "list"]) == 75
        err = capsys.readouterr().err
        assert (
            err.startswith("error: the run store is busy or unreachable") and err.count("\n") == 1
        )
        cluster.start()
        runs = api.client.get("/runs").json()["runs"]  # the pool reconnects by itself
        assert [r["status"] for r in runs] == ["QUEUED"]  # the refused submission left nothing
        assert main(["runs", "list", "--json"]) == 0
