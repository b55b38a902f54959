"""`training controller`: the prediction service's instances on this host, following an alias.

What `training up` does for the prediction service alone, for a deployment whose edge and
training service run on their own (the systemd units): the alias's target is rolled out on
SERVICE_REPLICAS instances, each new target after it, until SIGTERM.
"""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.output import stderr


def register(commands: Any) -> None:
    controller = commands.add_parser(
        "controller",
        help="run the prediction service's instances, rolling out each new target of SERVE_ALIAS",
    )
    controller.set_defaults(handler=run_controller)


def run_controller(args: argparse.Namespace) -> int:
    from training.ops.keys import KeyRing
    from training.ops.rollout import Controller
    from training.ops.supervisor import Supervisor
    from training.settings import RolloutSettings, ServiceSettings, Settings, load
    from training.store.deployments import Deployments
    from training.store.registry import Registry
    from training.store.revision import checked_database

    def say(text: str) -> None:
        stderr.print(text, highlight=False)

    settings, rollout = load(Settings), load(RolloutSettings)
    db = checked_database(settings)
    Deployments(db).close_unfinished("the controller stopped during the rollout")
    tag = Registry(db).get_alias(rollout.serve_alias).model_tag
    supervisor = Supervisor({}, {}, say)
    controller = Controller.of(
        settings, load(ServiceSettings), rollout, db, supervisor, KeyRing(settings.keys_path)
    )
    controller.use_stored_bentos = True
    try:
        controller.deploy(tag, "training controller")
    except BaseException:
        supervisor.stop()
        raise
    return controller.run()
