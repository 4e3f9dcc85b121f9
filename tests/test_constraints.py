"""constraints.txt, the exact versions every install uses, agrees with pyproject.toml and is used.

An install without it resolves ~150 packages afresh, which is how a new fastapi broke `prefect deploy`
and a new SQLAlchemy stopped Prefect 3.8.8's scheduler. `make lock` rewrites it; these checks catch a
hand edit or a pyproject change the lock was not refreshed for.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: version}; every line must be an exact ``name==version``."""
    out: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;,]+)", line)
        assert match, f"constraints.txt line {number} is not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in out, f"constraints.txt pins {name} twice (line {number})"
        out[name] = Version(match[2])
    return out


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and every extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [
        Requirement(r) for r in [*project["dependencies"], *(r for group in extras.values() for r in group)]
    ]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} (pyproject.toml) has no pin in constraints.txt: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[name]}, outside pyproject.toml's {req}: "
            "run `make lock`"
        )


def test_every_package_an_install_pulls_in_is_pinned() -> None:
    """The dependencies of the pinned packages (read from this environment's metadata) are pinned too,
    so no package of an install floats."""
    pinned = pins()
    todo = [(req, "") for req in declared()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        assert name in pinned, f"{req.name} is installed by listingflow but not pinned in constraints.txt"
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its own dependencies cannot be read
        for chosen in ["", *sorted(req.extras)]:
            todo += [(Requirement(r), chosen) for r in requires]
    assert len(seen) > 50  # the walk reached the transitive dependencies


def test_every_documented_install_uses_the_constraints() -> None:
    """The Makefile, the README and the runbook install with ``-c constraints.txt``."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install -q -c constraints\.txt -e '\.\[\$\(EXTRAS\)\]'", makefile)
    assert re.search(r"^\$\(STAMP\): pyproject\.toml constraints\.txt$", makefile, re.M)
    for doc in ("README.md", "deployments/README.md"):
        lines = [
            ln for ln in (ROOT / doc).read_text().splitlines() if re.search(r"pip install (-\S+ )*-e", ln)
        ]
        unconstrained = [ln.strip() for ln in lines if "-c constraints.txt" not in ln]
        assert not unconstrained, f"{doc} installs without constraints.txt: {unconstrained}"
