"""Neither the tests nor ``listingflow run`` read or write the user's ``~/.prefect``.

A ``~/.prefect`` belongs to whatever else the user runs with Prefect: its database may be migrated by a
newer Prefect (which made 56 tests fail), its profiles may point at a production server. The CLI keeps
Prefect's files under the listingflow state folder; the test session has its own PREFECT_HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_DB = b"SQLite format 3\x00 written by some other Prefect, not a database listingflow may touch"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _home_with_foreign_prefect(tmp_path: Path, *, profile: bool) -> Path:
    """A HOME whose ~/.prefect holds another Prefect's database and, with ``profile``, an active profile
    pointing at a server that is not there."""
    home = tmp_path / "home"
    (home / ".prefect").mkdir(parents=True)
    (home / ".prefect" / "prefect.db").write_bytes(FOREIGN_DB)
    if profile:
        (home / ".prefect" / "profiles.toml").write_text(
            'active = "elsewhere"\n[profiles.elsewhere]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
        )
    return home


def _env_without_prefect(home: Path, **extra: str) -> dict[str, str]:
    """This environment with HOME replaced and no Prefect or listingflow settings (as a user's shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LISTINGFLOW_"))}
    env.update(
        {"HOME": str(home), "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}
    )
    return env


@pytest.mark.usefixtures("prefect_server")
def test_the_session_runs_flows_with_its_own_prefect_home(tmp_path: Path) -> None:
    """Run by the next test in a fresh session whose HOME has a foreign ~/.prefect; here it also runs
    in the normal session."""
    from prefect import flow, task
    from prefect.settings import get_current_settings

    @task(persist_result=True)
    def double(x: int) -> int:
        return 2 * x

    @flow
    def tiny() -> int:
        return double(21)

    assert tiny() == 42
    home = get_current_settings().home.resolve()
    assert not home.is_relative_to(Path.home().resolve()), f"the session's Prefect home is {home}"


def test_the_suite_passes_and_leaves_a_foreign_prefect_home_alone(tmp_path: Path) -> None:
    home = _home_with_foreign_prefect(tmp_path, profile=True)
    before = _files(home)
    test = "tests/listingflow/test_prefect_home.py::test_the_session_runs_flows_with_its_own_prefect_home"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env=_env_without_prefect(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
    assert _files(home) == before, "the test session wrote under HOME"


def test_listingflow_run_keeps_prefect_files_in_the_state_folder(tmp_path: Path) -> None:
    """A local sandbox run (its own Prefect server) with no PREFECT_HOME: nothing is written under HOME;
    Prefect's files are under <LISTINGFLOW_HOME>/prefect. (The user's profiles are still read: they may
    name the server to use.)"""
    home = _home_with_foreign_prefect(tmp_path, profile=False)
    before = _files(home)
    state = tmp_path / "state"
    catalog = tmp_path / "one.csv"
    catalog.write_text("\n".join((ROOT / "examples" / "catalog.csv").read_text().splitlines()[:2]) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "listingflow.cli",
            "run",
            str(catalog),
            "--step",
            "copy",
            "--sandbox",
            "--sandbox-job-seconds",
            "0.2",
            "--archive",
            str(tmp_path / "archive"),
        ],
        env=_env_without_prefect(home, LISTINGFLOW_HOME=str(state)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 products: 1 complete" in out
    assert _files(home) == before, "listingflow run wrote under HOME"
    assert (state / "prefect").is_dir() and any((state / "prefect").iterdir())


def test_a_prefect_home_the_user_chose_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from listingflow.prefect_home import user_prefect_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_HOME")
    assert user_prefect_home() is None
    (tmp_path / ".env").write_text("PREFECT_HOME=/srv/prefect\n")
    assert user_prefect_home() == "/srv/prefect"
    monkeypatch.setenv("PREFECT_HOME", "/opt/prefect")
    assert user_prefect_home() == "/opt/prefect"


def test_the_cli_does_not_import_prefect_before_choosing_its_home() -> None:
    code = "import sys, listingflow.cli; sys.exit('prefect' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0
