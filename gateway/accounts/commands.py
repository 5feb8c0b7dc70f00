"""`gateway users create --email ... [--role ...]`: a local account (argon2id hash; the password is read from
the terminal without echo, or from standard input with --password-stdin, never from the command line)."""

from __future__ import annotations

import argparse
import getpass
import sys

import asyncpg

from gateway.accounts import passwords, store
from gateway.settings import Settings


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        print("passwords differ", file=sys.stderr)
        return None
    return first


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.cli import with_connection

    email = store.normalise_email(args.email)
    if "@" not in email or not 3 <= len(email) <= 320:
        print("--email: not an e-mail address", file=sys.stderr)
        return 2
    password = _read_password(args)
    if password is None:
        return 2
    if not passwords.MIN_PASSWORD_LENGTH <= len(password) <= passwords.MAX_PASSWORD_LENGTH:
        low, high = passwords.MIN_PASSWORD_LENGTH, passwords.MAX_PASSWORD_LENGTH
        print(f"the password needs {low} to {high} characters", file=sys.stderr)
        return 2
    password_hash = passwords.hash_password_sync(password)
    roles = sorted(set(args.role or []))

    async def job(con: asyncpg.Connection) -> int:
        try:
            user_id = await store.create_user(con, email, password_hash, roles)
        except asyncpg.UniqueViolationError:
            print("a user with this e-mail already exists", file=sys.stderr)
            return 1
        print(user_id)
        return 0

    return with_connection(args, settings, job)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.cli import add_database_option

    users = sub.add_parser("users", help="local accounts (AUTH_LOCAL_ENABLED)")
    actions = users.add_subparsers(dest="users_command", required=True)
    create = actions.add_parser("create", help="create a local account; prints its id")
    create.add_argument("--email", required=True)
    create.add_argument("--role", action="append", help="a role of the account (repeatable)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_database_option(create)
    create.set_defaults(func=cmd_users_create)
