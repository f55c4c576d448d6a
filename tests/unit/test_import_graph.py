"""Dependencies point one way: every member may import relayq.core; core imports nothing above it.

Read from the source (every import statement, at module level or inside a
function), so a lazy import cannot get around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from relayq.dev.servers import REPO_ROOT

MEMBERS = {
    "core": REPO_ROOT / "services/core/relayq/core",
    "worker": REPO_ROOT / "services/worker/relayq/worker",
    "api": REPO_ROOT / "services/api/relayq/api",
    "recovery": REPO_ROOT / "services/recovery/relayq/recovery",
    "cli": REPO_ROOT / "services/cli/relayq/cli",
    "operator": REPO_ROOT / "operator/relayq/operator",
    "relayer": REPO_ROOT / "services/relayer/relayq/relayer",
}
SOLANA = ("solana", "solders", "spl")
# What each member may import of relayq besides itself and core.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "worker": set(),
    "api": set(),
    "recovery": set(),
    "cli": {"worker", "api", "recovery"},
    "operator": set(),
    "relayer": {"api"},
}


def imports(package: Path) -> dict[str, set[str]]:
    """Each module file of the package, with the top-level names it imports."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_member_imports_only_core_and_what_it_is_allowed(member: str) -> None:
    allowed = {"core", member, *ALLOWED[member]}
    for path, names in imports(MEMBERS[member]).items():
        above = {
            n.split(".")[1] for n in names if n.startswith("relayq.") and n.count(".") >= 1
        } - allowed
        assert not above, f"{path} imports relayq.{sorted(above)}"


@pytest.mark.parametrize("member", sorted(set(MEMBERS) - {"relayer"}))
def test_only_the_relayer_imports_solana_libraries(member: str) -> None:
    for path, names in imports(MEMBERS[member]).items():
        solana = {n for n in names if n.split(".")[0] in SOLANA}
        assert not solana, f"{path} imports {sorted(solana)}"
