"""The provider contracts live in the repository, and every citation of them points at a real section.

Code cites a provider page as ``docs/providers/<name>.md §N``, or as ``contract §N`` inside a module
whose docstring names exactly one provider page. A citation whose section does not exist, a bare
section sign nobody can resolve, or a path outside the repository (the documents it was written
from are not shipped) is a broken link for the next reader.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "providers"
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh"}
TEXT_NAMES = {"Makefile", "run"}
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "venv", "archive"}

HEADING = re.compile(r"^## §(\d+) \S", re.MULTILINE)
EXPLICIT = re.compile(r"docs/providers/([A-Za-z0-9_-]+)\.md`?((?:\s*(?:,|/|and)?\s*§\d+)+)")
SECTION = re.compile(r"§(\d+)")
# Where the contracts were written from: outside the repository, so never cited.
OUTSIDE = re.compile(r"/work/shared|\.\./shared|shared/api/")


def _skipped(folder: str) -> bool:
    hidden = folder.startswith(".") and folder not in (".ci", ".github")
    return hidden or folder in SKIP_DIRS or folder.endswith(".egg-info")


def _files() -> list[Path]:
    """The repository's text files, not its virtualenvs (``make`` puts one in ``.venv``), caches or
    generated archives: those folders are pruned, never walked."""
    out = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not _skipped(d)]
        out += [Path(folder, n) for n in names if Path(n).suffix in TEXT_SUFFIXES or n in TEXT_NAMES]
    return sorted(out)


FILES = [p for p in _files() if p != Path(__file__).resolve()]  # this file's examples are broken on purpose


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _sections(name: str) -> set[int]:
    page = DOCS / f"{name}.md"
    return {int(n) for n in HEADING.findall(page.read_text(encoding="utf-8"))} if page.is_file() else set()


def _module_doc(text: str) -> str:
    try:
        return ast.get_docstring(ast.parse(text)) or ""
    except SyntaxError:
        return ""


def _broken_citations(rel: str, text: str) -> list[str]:
    """What is wrong with the citations in ``text``, the file at ``rel`` (relative to the repository)."""
    broken = []
    for match in EXPLICIT.finditer(text):
        name, cited = match.group(1), [int(n) for n in SECTION.findall(match.group(2))]
        missing = [n for n in cited if n not in _sections(name)]
        if missing:
            broken.append(f"{rel}: docs/providers/{name}.md has no section {missing}")
    bare = [int(n) for n in SECTION.findall(EXPLICIT.sub("", text))]
    if not bare:
        return broken
    if rel.startswith("docs/providers/"):
        page = Path(rel).stem
    elif rel.endswith(".py"):
        named = sorted(set(re.findall(r"docs/providers/([A-Za-z0-9_-]+)\.md", _module_doc(text))))
        if len(named) != 1:
            return [*broken, f"{rel}: cites §{bare[0]}; its docstring names {len(named)} provider pages"]
        page = named[0]
    else:
        return [*broken, f"{rel}: cites §{bare[0]} without naming the page (docs/providers/<name>.md §N)"]
    missing = sorted({n for n in bare if n not in _sections(page)})
    if missing:
        broken.append(f"{rel}: docs/providers/{page}.md has no section {missing}")
    return broken


def test_every_provider_has_a_page_with_numbered_sections() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    providers = pyproject["project"]["entry-points"]["listingflow.providers"]
    for name in providers:
        numbers = sorted(_sections(name))
        assert numbers, f"docs/providers/{name}.md is missing or has no '## §N Title' sections"
        assert numbers == list(range(1, len(numbers) + 1)), f"docs/providers/{name}.md sections: {numbers}"


def test_the_scan_sees_the_citing_code() -> None:
    """Guards the test itself: a scan that finds no files would pass everything."""
    scanned = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"providers/pixii/plugin.py", "benchmarks/README.md", "docs/providers/pixii.md"} <= scanned


def test_every_section_citation_resolves() -> None:
    broken = [
        line for path in FILES for line in _broken_citations(path.relative_to(ROOT).as_posix(), _read(path))
    ]
    assert not broken, "\n".join(broken)


def test_nothing_cites_documents_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT).as_posix()}:{n}: {line.strip()}"
        for path in FILES
        for n, line in enumerate(_read(path).splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_relative_links_in_the_markdown_resolve() -> None:
    """The README's and the docs' links to other files of the repository (not web pages, not anchors)."""
    link = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
    broken = [
        f"{path.relative_to(ROOT).as_posix()}: {target}"
        for path in FILES
        if path.suffix == ".md"
        for target in link.findall(_read(path))
        if "://" not in target and not target.startswith("mailto:") and not (path.parent / target).exists()
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        ("providers/x.py", '"""Plugin.\n\nContract: docs/providers/pixii.md."""\nX = 1  # contract §9\n', []),
        (
            "providers/x.py",
            '"""Plugin.\n\nContract: docs/providers/pixii.md."""\nX = 1  # contract §99\n',
            ["pixii.md has no section [99]"],
        ),
        ("providers/x.py", '"""No page named."""\nX = 1  # contract §9\n', ["names 0 provider pages"]),
        (
            "flows/x.py",
            "# docs/providers/prodvisual.md §4/§9 and `docs/providers/pixii.md` §42\n",
            ["pixii.md has no section [42]"],
        ),
        ("flows/x.py", "# docs/providers/nowhere.md §1\n", ["nowhere.md has no section [1]"]),
        ("README.md", "polls count (contract §4)\n", ["without naming the page"]),
        ("docs/providers/pixii.md", "## §1 Transport\nsee §9 and §77\n", ["pixii.md has no section [77]"]),
    ],
)
def test_the_checker_catches_broken_citations(rel: str, text: str, expected: list[str]) -> None:
    found = _broken_citations(rel, text)
    assert len(found) == len(expected), found
    assert all(e in f for e, f in zip(expected, found, strict=True)), found
