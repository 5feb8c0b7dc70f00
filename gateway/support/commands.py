"""Support commands of the runbook: `gateway events ...`, `gateway reservations ...`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None
