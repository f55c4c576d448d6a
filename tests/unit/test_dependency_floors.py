"""Dependency floors stay past known advisories, and the lock satisfies them.

A floor below a fixed version lets a resolver (a user's, or ours after a lock
refresh) pick an affected release; the lock decides what the images contain.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from relayq.dev.servers import REPO_ROOT

# package -> (first version fixing every listed advisory, the advisories)
ADVISORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    # Request smuggling through chunk extensions (3.10.11); request smuggling
    # through trailer sections in the pure-Python parser (3.12.14).
    "aiohttp": ("3.12.14", ("CVE-2024-52304", "CVE-2025-53643")),
    # Redirects not disabled when asked (2.5.0), through the kubernetes client.
    "urllib3": ("2.5.0", ("CVE-2025-50181", "CVE-2025-50182")),
    # .netrc credentials leaked to a third party (2.32.4).
    "requests": ("2.32.4", ("CVE-2024-47081",)),
    # Lenient chunked-encoding parsing (0.16.0), under solana's httpx.
    "h11": ("0.16.0", ("CVE-2025-43859",)),
}
PYPROJECTS = [
    REPO_ROOT / "pyproject.toml",
    *sorted(REPO_ROOT.glob("services/*/pyproject.toml")),
    REPO_ROOT / "operator" / "pyproject.toml",
]


def declared(pyproject: Path) -> list[Requirement]:
    """Every requirement a pyproject states: dependencies, groups, extras, uv constraints."""
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    texts: list[str] = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        texts += group
    for group in data.get("dependency-groups", {}).values():
        texts += [t for t in group if isinstance(t, str)]
    texts += data.get("tool", {}).get("uv", {}).get("constraint-dependencies", [])
    return [Requirement(t) for t in texts]


def floor(requirement: Requirement) -> Version | None:
    """The lowest version the requirement's `>=`/`==`/`~=` bounds admit, None without one."""
    bounds = [
        Version(s.version)
        for s in requirement.specifier
        if s.operator in {">=", ">", "==", "~=", "==="}
    ]
    return max(bounds) if bounds else None


def locked_versions() -> dict[str, Version]:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return {p["name"]: Version(p["version"]) for p in lock["package"] if "version" in p}


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_declared_floor_is_past_the_known_advisories(pyproject: Path) -> None:
    for requirement in declared(pyproject):
        if requirement.name not in ADVISORIES:
            continue
        fixed, advisories = ADVISORIES[requirement.name]
        lowest = floor(requirement)
        assert lowest is not None and lowest >= Version(fixed), (
            f"{pyproject.relative_to(REPO_ROOT)}: {requirement} admits versions affected by "
            f"{', '.join(advisories)} (fixed in {fixed})"
        )


def test_aiohttp_and_the_transitive_floors_are_declared() -> None:
    names = {r.name for p in PYPROJECTS for r in declared(p)}
    assert set(ADVISORIES) <= names


def test_locked_versions_satisfy_the_floors() -> None:
    locked = locked_versions()
    for name, (fixed, advisories) in ADVISORIES.items():
        if name in locked:
            assert locked[name] >= Version(fixed), (
                f"uv.lock has {name} {locked[name]}: {advisories}"
            )
    assert "aiohttp" in locked
