"""A small Dockerfile reader: instructions, build stages and ARG defaults.

Enough of the Dockerfile grammar for checking the project's own images:
comments, line continuations, parser directives and JSON (exec) or shell form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: `keyword` upper-cased, `value` the rest of its logical line."""

    keyword: str
    value: str
    line: int

    def words(self) -> list[str]:
        """The arguments: the JSON array of the exec form, else shell-split words."""
        text = self.value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
                    return parsed
        return shlex.split(text, posix=True)

    @property
    def exec_form(self) -> bool:
        return self.value.strip().startswith("[")


@dataclass
class Stage:
    """A build stage: its FROM image (ARGs resolved), its name and instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}")

    def chain(self, name: str) -> list[Stage]:
        """The stage `name` and the stages it is built FROM, oldest first."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[0].base in names:
            chain.insert(0, self.stage(chain[0].base))
        return chain

    def target(self, name: str) -> Stage:
        """What `--target name` runs, as one stage: its base image and every instruction."""
        chain = self.chain(name)
        merged = [i for s in chain for i in s.instructions]
        return Stage(chain[0].base, name, merged)

    def builds_of(self, name: str) -> list[Stage]:
        """The stages whose output the target copies in (`COPY --from=`), with their ancestors."""
        found: list[Stage] = []
        for copy in self.target(name).all("COPY"):
            source = re.search(r"--from=(\S+)", copy.value)
            if source and source.group(1) in {s.name for s in self.stages}:
                found += [s for s in self.chain(source.group(1)) if s not in found]
        return found


def parse_instructions(text: str) -> list[Instruction]:
    """Logical instructions of a Dockerfile, comments and continuations handled."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        logical = " ".join(p.strip() for p in pending).strip()
        pending = []
        keyword, _, value = logical.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")
    return out


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand(value: str, args: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: args.get(m.group(1) or m.group(2), ""), value)


def parse(path: Path) -> Dockerfile:
    """Stages of the Dockerfile at `path`, each FROM resolved against ARG defaults."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_instructions(path.read_text()):
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.value.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
            continue
        if instruction.keyword == "FROM":
            words = [w for w in instruction.words() if not w.startswith("--platform")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_expand(words[0], global_args), alias))
            continue
        if not stages:
            raise ValueError(f"line {instruction.line}: {instruction.keyword} before FROM")
        stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)
