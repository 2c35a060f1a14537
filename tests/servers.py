"""Servers the tests start on 127.0.0.1 (mlflow ui / server / models serve), and their clean-up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(*args: str, env: dict[str, str] | None = None, health: str = "/health",
                 timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Run ``mlflow <args> --host 127.0.0.1 --port <free>`` and wait until ``health`` answers."""
    return start_server("mlflow", *args, env=env, health=health, timeout=timeout)


def start_server(program: str, *args: str, env: dict[str, str] | None = None, health: str = "/health",
                 timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Run the venv's ``program <args> --host 127.0.0.1 --port <free>`` and wait until ``health`` answers.

    The venv's bin goes first on PATH: MLflow starts uvicorn/gunicorn by name.
    """
    port = free_port()
    server = subprocess.Popen(
        [str(BIN_DIR / program), *args, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **(env or {}), "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}{health}", timeout=5) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            pass
        if server.poll() is not None:
            assert server.stdout is not None  # started with stdout=PIPE
            raise AssertionError(f"{program} {' '.join(args[:1])} exited: {server.stdout.read().decode()[-3000:]}")
        if time.time() > deadline:
            stop(server)
            raise AssertionError(f"{program} {' '.join(args[:1])} did not answer {health} within {timeout} s")
        time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    """Stop a server and every process it started."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
