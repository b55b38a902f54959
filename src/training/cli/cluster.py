"""`training scheduler` and `training worker`: the Dask cluster's processes, our settings.

Each command becomes the Dask process itself (exec), so signals, logs and exit codes are
Dask's own: SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from training.cli.output import stderr
from training.errors import UserError

DEFAULT_PORT = 8786


def register(commands: Any) -> None:
    scheduler = commands.add_parser(
        "scheduler", help="run the Dask scheduler that TRAINING_CLUSTER names"
    )
    scheduler.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    scheduler.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default loopback; a private address for other hosts)",
    )
    scheduler.set_defaults(handler=run_scheduler)

    worker = commands.add_parser("worker", help="run one training worker for a scheduler")
    worker.add_argument("scheduler", metavar="tcp://HOST:PORT", help="the scheduler's address")
    worker.add_argument("--name", help="unique name of this worker (default: the host's name)")
    worker.add_argument(
        "--cpus", type=int, default=1, help="CPUs a job here may use (n_jobs; default 1)"
    )
    worker.add_argument(
        "--contact-address",
        metavar="tcp://HOST:PORT",
        help="the address it names itself by (default this host's); never dialled",
    )
    worker.set_defaults(handler=run_worker)


def _checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}", field="port")
    return port


def run_scheduler(args: argparse.Namespace) -> int:
    from training.jobs.nodes import SCHEDULER_CONFIG, scheduler_command

    command = scheduler_command(args.host, _checked_port(args.port))
    stderr.print(
        f"scheduler on tcp://{args.host}:{args.port}; start workers with "
        f"`training worker tcp://{args.host}:{args.port}`, set TRAINING_CLUSTER to it"
    )
    os.execve(command[0], command, {**os.environ, **SCHEDULER_CONFIG})


def run_worker(args: argparse.Namespace) -> int:
    from training.jobs.nodes import worker_command, worker_environment
    from training.settings import ServerSettings, load

    if not args.scheduler.startswith(("tcp://", "tls://")):
        raise UserError(f"expected the scheduler as tcp://HOST:PORT, got {args.scheduler!r}")
    if not 1 <= args.cpus <= 1024:
        raise UserError(f"--cpus must be between 1 and 1024, got {args.cpus}", field="cpus")
    memory_mb = load(ServerSettings).training_job_memory_mb
    name = args.name or socket.gethostname()
    command = worker_command(args.scheduler, name, args.cpus, memory_mb, args.contact_address)
    stderr.print(f"worker {name} for {args.scheduler}: 1 job at a time, {memory_mb} MB cap")
    os.execve(command[0], command, {**os.environ, **worker_environment(memory_mb)})
