"""Where Prefect keeps its local files when the ``listingflow`` command runs.

Prefect writes a telemetry id, result storage (pickled exceptions of failed runs), a memo store and
its SQLite database under ``PREFECT_HOME`` (default ``~/.prefect``), and it creates that folder as soon
as it is imported. A ``~/.prefect`` shared with other Prefect projects (or one migrated by a newer
Prefect) is not listingflow's to write, so the CLI points ``PREFECT_HOME`` at ``<state dir>/prefect``
before anything imports Prefect, unless the user chose a ``PREFECT_HOME`` (environment or ``.env``).
The user's Prefect profiles (``~/.prefect/profiles.toml``, e.g. ``prefect config set PREFECT_API_URL``)
are still read: they say which server to use, which is the user's choice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PREFECT_FOLDER = "prefect"


def user_prefect_home() -> str | None:
    """The PREFECT_HOME the user set in the environment or the working directory's ``.env``."""
    if os.environ.get("PREFECT_HOME"):
        return os.environ["PREFECT_HOME"]
    from dotenv import dotenv_values

    return dotenv_values(".env").get("PREFECT_HOME") if Path(".env").is_file() else None


def use_state_dir_for_prefect(state_dir: Path) -> Path | None:
    """Point this process (and the processes it starts) at ``<state_dir>/prefect``; return that path,
    or None when the user set PREFECT_HOME. Call it before Prefect is imported: Prefect reads its home
    and profiles once, at import (and creates the folder then)."""
    if user_prefect_home():
        return None
    home = state_dir / PREFECT_FOLDER
    home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level, and warns otherwise
    os.environ["PREFECT_HOME"] = str(home)
    profiles = Path.home() / ".prefect" / "profiles.toml"
    if "PREFECT_PROFILES_PATH" not in os.environ and profiles.is_file():
        os.environ["PREFECT_PROFILES_PATH"] = str(profiles)
    if "prefect.context" in sys.modules:  # imported already (in-process callers): re-read the settings
        sys.modules["prefect.context"].refresh_global_settings_context()
    return home
