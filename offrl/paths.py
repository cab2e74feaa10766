"""Where offrl keeps what it builds: generated datasets, pre-training artefacts. One root, overridable."""
from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """$OFFRL_DATA_DIR, else ~/.offrl. Generated datasets live in <root>/datasets, artefacts in <root>/cache."""
    return Path(os.environ.get("OFFRL_DATA_DIR", Path.home() / ".offrl")).expanduser()


def datasets_dir() -> Path:
    return data_root() / "datasets"


def cache_dir() -> Path:
    return data_root() / "cache"
