"""Each service image, a target of the one Dockerfile: built by uv from the lock, slim, non-root."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from relayq.cli.main import build_parser
from relayq.dev.servers import REPO_ROOT
from tests.chart.dockerfile import Dockerfile, parse, parse_instructions

DOCKERFILE = REPO_ROOT / "Dockerfile"
# image (= Dockerfile target) -> (the workspace package it must install, ports it must expose)
IMAGES = {
    "api": ("relayq-api", {8080, 9100}),
    "worker": ("relayq-worker", {9100}),
    "recovery": ("relayq-recovery", set()),
    "operator": ("relayq-operator", {8080, 9100}),
}
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cargo|rustc|libc6-dev|python3-dev|apt-get|apk)\b"
)


class Image:
    """One target: `final` is what it runs (its stage chain merged), `stages` its build."""

    def __init__(self, dockerfile: Dockerfile, name: str) -> None:
        self.final = dockerfile.target(name)
        self.stages = [*dockerfile.builds_of(name), self.final]


def _image(name: str) -> Image:
    return Image(parse(DOCKERFILE), name)


def _run_text(stage_instructions: list[str]) -> str:
    return "\n".join(stage_instructions)


def _relayq_commands() -> set[str]:
    """Sub-commands the `relayq` command accepts (its parser and the long-running ones)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def _console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = {}
    for pyproject in [
        *REPO_ROOT.glob("services/*/pyproject.toml"),
        REPO_ROOT / "operator/pyproject.toml",
    ]:
        data = tomllib.loads(pyproject.read_text())
        scripts.update(data.get("project", {}).get("scripts", {}))
    return scripts


def test_parser_reads_continuations_comments_and_exec_form() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\nFROM ${BASE} AS build\n"
        'RUN a \\\n    # inner comment\n    && b\nENTRYPOINT ["x", "y z"]\n'
    )
    instructions = parse_instructions(text)
    assert [i.keyword for i in instructions] == ["ARG", "FROM", "RUN", "ENTRYPOINT"]
    assert instructions[2].value == "a && b"
    assert instructions[3].words() == ["x", "y z"] and instructions[3].exec_form


def test_parser_refuses_an_instruction_before_from(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("RUN true\nFROM scratch\n")
    with pytest.raises(ValueError, match="before FROM"):
        parse(path)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_builds_in_stages_from_the_frozen_lock(name: str) -> None:
    image = _image(name)
    assert len(image.stages) >= 2, "multi-stage: build tools stay out of the final image"
    build_runs = _run_text([i.value for s in image.stages[:-1] for i in s.all("RUN")])
    assert "uv sync" in build_runs and "--frozen" in build_runs and "--no-dev" in build_runs
    assert f"--package {IMAGES[name][0]}" in build_runs
    copies = " ".join(i.value for s in image.stages[:-1] for i in s.all("COPY"))
    assert "uv.lock" in copies and "pyproject.toml" in copies
    dockerfile = parse(DOCKERFILE)
    assert (
        any("astral-sh/uv" in s.base for s in dockerfile.stages) or "pip install uv" in build_runs
    )


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_final_stage_is_slim_non_root_and_free_of_build_tools(name: str) -> None:
    image = _image(name)
    final = image.final
    assert final.base.startswith("python:3.11.") and "-slim" in final.base
    users = final.all("USER")
    assert users, "the final stage sets a USER"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root user (runAsNonRoot can check it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    final_text = _run_text([f"{i.keyword} {i.value}" for i in final.instructions])
    assert not BUILD_TOOLS.search(final_text), "no compilers or package installs in the final stage"
    assert not final.all("RUN"), "the final stage only copies the built environment"
    copies = final.all("COPY")
    assert copies and all("--from=" in c.value for c in copies), "no sources in the final image"
    assert not final.all("HEALTHCHECK"), "health is checked by Kubernetes probes"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_final_stage_suits_a_read_only_root_filesystem(name: str) -> None:
    final = _image(name).final
    env = " ".join(i.value for i in final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    workdirs = final.all("WORKDIR")
    assert not workdirs or workdirs[-1].value in {"/tmp", "/"}
    assert not final.all("VOLUME")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_final_stage_exposes_the_service_ports(name: str) -> None:
    exposed = {int(p.split("/")[0]) for i in _image(name).final.all("EXPOSE") for p in i.words()}
    assert exposed == IMAGES[name][1]


@pytest.mark.parametrize("name", ["api", "worker", "recovery"])
def test_service_entrypoint_is_a_relayq_command(name: str) -> None:
    entrypoints = _image(name).final.all("ENTRYPOINT")
    assert entrypoints and entrypoints[-1].exec_form, "exec form: the process gets SIGTERM"
    words = entrypoints[-1].words()
    assert words[0] == "relayq" and _console_scripts()["relayq"] == "relayq.cli.main:main"
    assert words[1] == name and name in _relayq_commands()


def test_operator_entrypoint_is_the_operator_script() -> None:
    entrypoints = _image("operator").final.all("ENTRYPOINT")
    assert entrypoints and entrypoints[-1].exec_form
    script = entrypoints[-1].words()[0]
    target = _console_scripts().get(script)
    assert target is not None, f"{script} is declared in operator/pyproject.toml [project.scripts]"
    module = target.split(":")[0]
    assert (REPO_ROOT / "operator" / (module.replace(".", "/") + ".py")).is_file()


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".tools", "tests"} <= ignored
    # What the Dockerfiles copy must not be ignored.
    assert not ({"services", "operator", "uv.lock", "pyproject.toml"} & ignored)


def _lock_closure(roots: set[str]) -> set[str]:
    """Every package uv.lock installs for `roots` (without dev groups or extras)."""
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    deps = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += deps.get(name, [])
    return seen


def _image_packages(name: str) -> set[str]:
    build_runs = _run_text([i.value for s in _image(name).stages[:-1] for i in s.all("RUN")])
    return set(re.findall(r"--package (\S+)", build_runs))


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_image_installs_the_local_development_tools(name: str) -> None:
    # The local chain and the local-stack launchers are for development only.
    installed = _lock_closure(_image_packages(name))
    assert installed & {"relayq-devchain", "relayq-dev"} == set()
    assert "relayq-core" in installed


# name[:tag][@sha256:digest]; the tag must begin with a full version (3.11.14, 0.13.9).
BASE_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9./_-]*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*))?"
    r"(?:@sha256:(?P<digest>[0-9a-f]{64}))?$"
)
FULL_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:[-.][A-Za-z0-9.-]+)?$")


def base_image_problem(reference: str) -> str | None:
    """Why a FROM reference is not an explicit version, or None when it is."""
    found = BASE_IMAGE.match(reference)
    if not found:
        return f"{reference!r} is not an image reference"
    tag = found.group("tag")
    if tag is None:
        return f"{reference!r} names no tag (Docker reads it as latest)"
    if tag == "latest" or not FULL_VERSION.match(tag):
        return f"{reference!r}: {tag!r} is not an exact version"
    return None


@pytest.mark.parametrize(
    ("reference", "ok"),
    [
        ("python:3.11.14-slim-bookworm", True),
        ("ghcr.io/astral-sh/uv:0.13.9", True),
        ("python:3.11.14-slim@sha256:" + "a" * 64, True),
        ("python", False),
        ("python:latest", False),
        ("python:3.11-slim", False),
        ("ghcr.io/astral-sh/uv:0.13", False),
        ("python@sha256:" + "a" * 64, False),
    ],
)
def test_base_image_check_accepts_only_exact_versions(reference: str, ok: bool) -> None:
    assert (base_image_problem(reference) is None) is ok


def test_every_base_image_is_named_by_an_exact_version_tag() -> None:
    # A moving tag (latest, 3.11-slim) changes what a rebuild contains without a
    # change to review; digests are pinned on top of this (docs/install.md).
    dockerfile = parse(DOCKERFILE)
    stages = {s.name for s in dockerfile.stages}
    bases = [s.base for s in dockerfile.stages if s.base not in stages]
    assert bases, "the Dockerfile names its base images"
    problems = [p for p in map(base_image_problem, bases) if p]
    assert not problems, problems
    for copy in (i for s in dockerfile.stages for i in s.all("COPY")):
        source = re.search(r"--from=(\S+)", copy.value)
        if source and source.group(1) not in stages:
            assert base_image_problem(source.group(1)) is None, copy.value
