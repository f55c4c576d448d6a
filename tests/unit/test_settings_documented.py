"""Every environment variable relayq reads is documented, and every documented one is read.

The code is the source: each `RELAYQ_*` name written in it must appear in the
README or docs/, and each name in the README's settings tables must be read
somewhere, so the two cannot drift apart.
"""

from __future__ import annotations

import re

from relayq.dev.servers import REPO_ROOT

NAME = re.compile(r"\bRELAYQ_[A-Z0-9_]*[A-Z0-9]\b")
# Names built from parts at run time: the per-priority overrides (relayq.core.settings).
PER_PRIORITY = re.compile(r"\bRELAYQ_(CRITICAL|HIGH|MEDIUM|LOW|BATCH)_[A-Z_]+\b")


def names_in_code() -> set[str]:
    found: set[str] = set()
    for root in ("services", "operator"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            found |= set(NAME.findall(path.read_text()))
    return found


def names_in_docs() -> set[str]:
    text = (REPO_ROOT / "README.md").read_text()
    for path in (REPO_ROOT / "docs").glob("*.md"):
        text += path.read_text()
    return set(NAME.findall(text))


def table_names() -> set[str]:
    """Names in the first column of the README's tables."""
    rows = re.findall(r"^\| `(RELAYQ_[A-Z0-9_]+)`", (REPO_ROOT / "README.md").read_text(), re.M)
    return set(rows)


def test_every_variable_the_code_reads_is_documented() -> None:
    code = {n for n in names_in_code() if not PER_PRIORITY.fullmatch(n)}
    missing = sorted(code - names_in_docs())
    assert not missing, f"read by the code, documented nowhere: {missing}"


def test_every_variable_in_the_settings_tables_is_read() -> None:
    code = names_in_code()
    stale = sorted(n for n in table_names() - code if not PER_PRIORITY.fullmatch(n))
    assert not stale, f"in the README's tables, read by no code: {stale}"
