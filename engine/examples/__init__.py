"""The example playbooks and config.example.yaml, which `siyu demo`, `siyu check` and `siyu fakes`
fall back on when the working directory has none.

They are kept once, at the repository's top level (`playbooks/`, `config.example.yaml`); building
the wheel copies them into this package (pyproject.toml, `force-include`), so an installed Siyu
finds them here and a source checkout finds them at its top level.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFIG_EXAMPLE = "config.example.yaml"
PLAYBOOKS = "playbooks"


def root() -> Path:
    """The directory holding `playbooks/` and `config.example.yaml`: this package in an installed
    wheel, else the top level of the source checkout this module was imported from."""
    bundled = resources.files(__name__)
    if isinstance(bundled, Path) and (bundled / CONFIG_EXAMPLE).is_file():
        return bundled
    return Path(__file__).resolve().parents[2]


def playbooks() -> Path:
    """The example playbooks' directory."""
    return root() / PLAYBOOKS


def config_example() -> Path:
    """The example config (the shop `links:` and the documented defaults)."""
    return root() / CONFIG_EXAMPLE

