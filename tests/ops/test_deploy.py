"""Operations files: systemd units that systemd itself accepts, a compose file that keeps the
service off every published port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from servers import REPO

DEPLOY = REPO / "deploy"
UNITS = ("training-prediction.service", "training-api.service", "training-edge.service")


def render(unit: str, tmp: Path) -> Path:
    """The unit as installed: /opt/training is this checkout, the env file a copy of the example."""
    env_file = tmp / "training.env"
    env_file.write_text((DEPLOY / "training.env.example").read_text())
    text = (DEPLOY / unit).read_text()
    text = text.replace("/opt/training", str(REPO)).replace(
        "/etc/training/training.env", str(env_file)
    )
    path = tmp / unit
    path.write_text(text)
    return path


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_units_verify_cleanly(tmp_path: Path) -> None:
    paths = [str(render(unit, tmp_path)) for unit in UNITS]
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    broken = render(UNITS[0], tmp_path)
    broken.write_text(broken.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True
    )
    assert "Failed to parse service restart specifier" in done.stderr  # the check can fail


@pytest.mark.parametrize("unit", UNITS)
def test_units_start_at_boot_restart_and_run_unprivileged_and_hardened(unit: str) -> None:
    text = (DEPLOY / unit).read_text()
    for line in (
        "WantedBy=multi-user.target",
        "Restart=on-failure",
        "User=training",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ):
        assert f"\n{line}\n" in text, line


def test_the_prediction_unit_runs_the_controller_on_loopback_only() -> None:
    text = (DEPLOY / "training-prediction.service").read_text()
    assert "training controller\n" in text and "SERVICE_HOST=127.0.0.1" in text
    assert "CapabilityBoundingSet=\n" in text and "\nKillMode=mixed\n" in text
    env = (DEPLOY / "training.env.example").read_text()
    replicas = int(env.split("SERVICE_REPLICAS=")[1].split()[0])
    upstream = env.split("SERVICE_UPSTREAM=")[1].splitlines()[0].split()
    assert upstream == [f"127.0.0.1:{3000 + 2 * n}" for n in range(2 * replicas)]  # every slot


def test_the_training_unit_stops_through_the_grace_period() -> None:
    text = (DEPLOY / "training-api.service").read_text()
    assert "training serve" in text and "\nKillMode=mixed\n" in text  # SIGTERM to the service alone


def test_compose_publishes_only_the_edge() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    prediction, edge = compose["services"]["prediction"], compose["services"]["edge"]
    assert "ports" not in prediction and prediction["environment"]["REQUIRE_API_KEY"] == "true"
    assert edge["ports"] == ["443:443", "80:80"]
    assert edge["environment"]["SERVICE_UPSTREAM"] == "prediction:3000"
    assert "../Caddyfile:/etc/caddy/Caddyfile:ro" in edge["volumes"]
    assert (DEPLOY / "../Caddyfile").resolve() == REPO / "Caddyfile"
