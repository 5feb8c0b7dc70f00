"""The gateway's version: the installed package's, else (run from a source tree, as in the Docker image) the
one of pyproject.toml, repeated here (tests/test_cli_operations.py keeps them equal)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SOURCE_VERSION = "0.1.0"

try:
    VERSION = version("stripe-gateway")
except PackageNotFoundError:
    VERSION = SOURCE_VERSION
