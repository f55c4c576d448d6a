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
    "cli": {"worker", "api", "recovery", "relayer"},
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


# Writes of the task collection outside core (task fields belong to relayq.core.lifecycle).
COLLECTION_WRITES = {
    "insert_one", "insert_many", "update_one", "update_many", "replace_one",
    "find_one_and_update", "find_one_and_replace", "find_one_and_delete",
    "delete_one", "delete_many", "bulk_write",
}  # fmt: skip


def writes_outside_core(path: Path) -> list[str]:
    """Calls of `transition` and of a write method on a `tasks` collection, by line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if node.func.attr == "transition" or (
            node.func.attr in COLLECTION_WRITES and owner_name == "tasks"
        ):
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.func.attr}")
    return found


@pytest.mark.parametrize("member", sorted(set(MEMBERS) - {"core"}))
def test_only_core_writes_task_records(member: str) -> None:
    # Named transitions (Lifecycle) and store methods, never a raw write: renaming
    # an argument cannot get around this, since any call of these names counts.
    found = [w for path in MEMBERS[member].rglob("*.py") for w in writes_outside_core(path)]
    assert not found, found


# Running Lua, or reaching core's registered scripts, is core's alone (relayq.core.scripts).
SCRIPT_ACCESS = {"scripts", "_scripts", "register_script", "eval", "evalsha", "script_load"}


@pytest.mark.parametrize("member", sorted(set(MEMBERS) - {"core"}))
def test_only_core_runs_redis_scripts(member: str) -> None:
    found = []
    for path in MEMBERS[member].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in SCRIPT_ACCESS:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} .{node.attr}")
        found += [
            f"{path.relative_to(REPO_ROOT)}: a Lua file" for path in MEMBERS[member].rglob("*.lua")
        ]
    assert not found, found
