"""Where offrl keeps what it builds: generated datasets, pre-training artefacts. One root, overridable."""
from __future__ import annotations

import os
from pathlib import Path

from offrl.errors import OfflineRLError


def data_root() -> Path:
    """$OFFRL_DATA_DIR, else ~/.offrl. Generated datasets live in <root>/datasets, artefacts in <root>/cache."""
    root = Path(os.environ.get("OFFRL_DATA_DIR", Path.home() / ".offrl")).expanduser()
    if root.exists() and not root.is_dir():  # else every listing would call it empty and every build fail late
        raise OfflineRLError(f"the data folder {root} (OFFRL_DATA_DIR) is a file, not a folder")
    return root


def datasets_dir() -> Path:
    return data_root() / "datasets"


def cache_dir() -> Path:
    return data_root() / "cache"
