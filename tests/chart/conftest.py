"""Fixtures of the chart tests: an isolated Helm home and each ci/ file rendered once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.render import CI_VALUES, Render, template


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="session", params=CI_VALUES, ids=[p.name for p in CI_VALUES])
def ci_render(request: pytest.FixtureRequest, helm_home: Path) -> Render:
    """`helm template` of one ci/ values file, rendered once per session."""
    path: Path = request.param
    return template(helm_home, [path])
