"""Audit rows of billing actions taken from our side (who asked Stripe for what, under which request)."""

from __future__ import annotations

from typing import Any

import asyncpg

INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, request_id, details)
VALUES ($1, $2, $3, $4, $5::uuid, $6, $7)
"""


async def audit(
    con: asyncpg.Connection,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    request_id: str | None,
    order_id: str | None = None,
    **details: Any,
) -> None:
    await con.execute(INSERT_AUDIT, actor, action, subject_type, subject_id, order_id, request_id, details)
