"""Print the runtime requirements of pyproject.toml, plus those of the extras named on the command line, one per
line (the Docker image installs exactly these: `python requirements_from_pyproject.py speed`)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[1:]:
    requirements += project.get("optional-dependencies", {})[extra]
print("\n".join(requirements))
