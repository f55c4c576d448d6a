"""In-process failpoints: a trap sees each point its run reaches and can end the run there."""

from __future__ import annotations

import asyncio

import pytest

from relayq.core.failpoints import failpoint, trapped


class Crashed(BaseException):
    pass


def test_a_trap_sees_each_point_reached_and_nothing_after_it_is_left() -> None:
    seen: list[str] = []
    with trapped(seen.append):
        failpoint("a.one")
        failpoint("a.two")
    failpoint("a.three")  # outside: nobody is told, nothing happens
    assert seen == ["a.one", "a.two"]


def test_a_trap_that_raises_ends_the_run_at_that_point() -> None:
    done: list[str] = []

    def crash(name: str) -> None:
        if name == "b.two":
            raise Crashed(name)

    with pytest.raises(Crashed, match=r"b\.two"), trapped(crash):
        for name in ("b.one", "b.two", "b.three"):
            failpoint(name)
            done.append(name)
    assert done == ["b.one"]


async def test_a_trap_holds_for_its_own_task_only() -> None:
    seen: list[tuple[str, str]] = []
    gate = asyncio.Event()

    async def run(label: str, trap: bool) -> None:
        if trap:
            with trapped(lambda name: seen.append((label, name))):
                await gate.wait()
                failpoint("c.point")
        else:
            await gate.wait()
            failpoint("c.point")

    runs = [asyncio.create_task(run("trapped", True)), asyncio.create_task(run("free", False))]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*runs)
    assert seen == [("trapped", "c.point")]
