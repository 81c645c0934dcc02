"""Running the application with uvicorn on a socket bound here, and saying where once it listens."""

from __future__ import annotations

import socket
import sys

import uvicorn
from fastapi import FastAPI

from ..errors import DeepLabError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); a refusal is one line naming the option."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise DeepLabError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (0 picks a free one) "
            "or --host"
        ) from exc
    except (OverflowError, ValueError) as exc:
        raise DeepLabError(f"--port must be 0..65535, got {port}") from exc


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, printing ``serving on URL`` on stdout once the socket accepts requests."""

    def __init__(self, config: uvicorn.Config, url: str):
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(f"serving on {self.url}", flush=True)


def run_server(app: FastAPI, host: str, port: int, *, log_level: str = "warning") -> None:
    """Serve ``app`` until SIGINT or SIGTERM. uvicorn finishes the requests in flight, then raises the
    signal again, so the command ends as the CLI documents for it (130 or 143)."""
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, server_header=False)
    try:
        _Server(config, url_of(host, sock)).run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
