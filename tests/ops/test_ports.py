"""`training up` refuses a port in use, but not one that only has connections in TIME_WAIT."""

from __future__ import annotations

import socket

import pytest

from training.errors import UserError
from training.ops.edge import require_free


def port_in_time_wait() -> int:
    """A port whose server closed a connection first: that socket waits in TIME_WAIT. The
    server binds as uvicorn and Caddy do (SO_REUSEADDR, which its connections inherit)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first keeps TIME_WAIT
        client.close()
    return port


def test_a_port_in_time_wait_is_free_and_a_listening_one_is_refused() -> None:
    port = port_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("0.0.0.0", port))  # what the check did before: refused
    require_free({"SERVICE_PORT": port})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = int(busy.getsockname()[1])
        with pytest.raises(UserError, match=f"port {taken} \\(TRAINING_PORT\\) is in use"):
            require_free({"TRAINING_PORT": taken})
