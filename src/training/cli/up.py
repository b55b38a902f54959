"""`training up` (what `make up` runs): everything from a fresh checkout to HTTPS predictions."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.output import stderr, stdout
from training.cli.progress import progress_display


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up", help="train if needed, build, serve behind Caddy over HTTPS; Ctrl-C stops"
    )
    up.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace) -> int:
    from training.ops.up import run_until_stopped, start
    from training.settings import (
        EdgeSettings,
        RolloutSettings,
        ServerSettings,
        ServiceSettings,
        load,
    )

    def say(text: str) -> None:
        stderr.print(text, highlight=False)

    with progress_display("up") as report:
        rollout = load(RolloutSettings)
        started = start(
            load(ServerSettings),
            load(ServiceSettings),
            load(EdgeSettings),
            rollout,
            report,
            say,
        )
    stdout.print(
        "\nReady. The prediction API is served over HTTPS (Ctrl-C stops it).\n"
        f"  URL      {started.url}\n"
        f"  CA file  {started.ca_file}\n"
        f"  API key  {started.predict_key}   (scope predict; made for this start)\n"
        f"  model    {started.controller.live_tag} (alias {rollout.serve_alias}, "
        f"{rollout.service_replicas} instance(s)); `training promote TAG --alias "
        f"{rollout.serve_alias}` rolls a new version out, `training deployments` lists them\n"
        f"  logs     {started.logs_dir}/ (service-N, training, caddy)\n"
        "  more keys: .venv/bin/training keys create --name NAME\n\n"
        "Try it:\n",
        highlight=False,
    )
    stdout.print(started.curl(), highlight=False, soft_wrap=True)
    stdout.print(
        f"\nStart a training (admin key {started.admin_key}), then follow it with GET "
        "/training/runs/RUN_ID or /training/runs/RUN_ID/events:\n",
        highlight=False,
    )
    stdout.print(started.training_curl(), highlight=False, soft_wrap=True)
    stdout.print(
        f"\nThe runs dashboard: {started.url}/training/ui/ (log in with that admin key; "
        f"your browser must trust the CA file above)\n",
        highlight=False,
    )

    return run_until_stopped(started)
