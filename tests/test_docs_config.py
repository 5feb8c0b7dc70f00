"""Every setting is documented: README.md's configuration table and .env.example list exactly the env names of
gateway.settings.SETTING_FIELDS (none missing, none stale), and .env.example's values are the defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import SETTING_FIELDS, Settings, load_settings, read_env_file

ROOT = Path(__file__).resolve().parents[1]
SETTING_NAMES = {f.metadata["env"] for f in SETTING_FIELDS}
ENV_LINE = re.compile(r"^\s*#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=")
TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def readme_table_names() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if TABLE_START in text and TABLE_END in text:
        text = text[text.index(TABLE_START) : text.index(TABLE_END)]
    names = []
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        first_cell = line.strip().strip("|").split("|")[0]
        match = re.fullmatch(r"\s*`([A-Z][A-Z0-9_]*)`\s*", first_cell)
        if match:
            names.append(match[1])
    return names


def env_example_names() -> list[str]:
    names = []
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line)
        if match:
            names.append(match[1])
    return names


def test_env_example_lists_every_setting_once() -> None:
    names = env_example_names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f".env.example lists these twice: {duplicates}"
    assert not SETTING_NAMES - set(names), f"missing from .env.example: {sorted(SETTING_NAMES - set(names))}"
    assert not set(names) - SETTING_NAMES, f"stale in .env.example: {sorted(set(names) - SETTING_NAMES)}"


def test_env_example_values_are_the_defaults() -> None:
    values = read_env_file(ROOT / ".env.example")
    assert set(values) == SETTING_NAMES
    assert load_settings(values) == Settings()


def test_env_example_explains_every_setting() -> None:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = ENV_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            assert index > 0 and lines[index - 1].startswith("# "), f"no comment above {match[1]}"


def test_readme_table_lists_every_setting_once() -> None:
    if not (ROOT / "README.md").is_file():
        pytest.fail("README.md is missing")
    names = readme_table_names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"README.md's table lists these twice: {duplicates}"
    missing = sorted(SETTING_NAMES - set(names))
    assert not missing, f"missing from README.md's table: {missing}"
    assert not set(names) - SETTING_NAMES, f"stale in README.md's table: {sorted(set(names) - SETTING_NAMES)}"
