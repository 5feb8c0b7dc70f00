"""The development webhook secret: `serve` in development without STRIPE_WEBHOOK_SECRET generates one, keeps it in
GATEWAY_DATA_DIR (so restarts and `gateway dev send-event` use the same one) and prints it once, when it is made.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SECRET_FILE = "dev-webhook-secret"  # noqa: S105 (a file name)


def secret_path(data_dir: str) -> Path:
    return Path(data_dir) / SECRET_FILE


def read_dev_secret(data_dir: str) -> str | None:
    try:
        secret = secret_path(data_dir).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return secret or None


def ensure_dev_secret(data_dir: str) -> tuple[str, bool]:
    """The secret of `data_dir`, and whether this call made it."""
    existing = read_dev_secret(data_dir)
    if existing is not None:
        return existing, False
    path = secret_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    return secret, True


def announce_dev_secret(data_dir: str) -> str:
    """The secret to verify webhooks with; printed on stderr the time it is generated."""
    secret, created = ensure_dev_secret(data_dir)
    path = secret_path(data_dir)
    if created:
        print(
            f"development webhook secret (generated, kept in {path}): {secret}\n"
            "  send a signed sample event:  .venv/bin/gateway dev send-event checkout.session.completed\n"
            f"  with Stripe's CLI instead:   STRIPE_WEBHOOK_SECRET=<the secret `stripe listen` prints>",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"development webhook secret: the one in {path}", file=sys.stderr, flush=True)
    return secret
