"""Run `python -m gateway ...` as an operator does: its own process, a clean environment (no developer .env), and
what it printed and returned."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from gateway.settings import SETTING_FIELDS
from tests.conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]


def clean_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test environment (BASE_ENV) and `env`, no setting inherited from the developer's shell."""
    clean = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in SETTING_FIELDS}}
    clean.update(BASE_ENV)
    clean.update(env)
    clean["GATEWAY_ENV_FILE"] = str(tmp_path / "absent.env")
    clean["PYTHONPATH"] = str(ROOT)
    return {k: v for k, v in clean.items() if v is not None}


def gateway(
    argv: list[str], env: dict[str, str], tmp_path: Path, *, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        env=clean_env(env, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
    )


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
