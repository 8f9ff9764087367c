"""accounts.runtime: loop-bound resources, resets, background work and the order of a stop."""

import asyncio

from accounts import runtime


class Resource:
    def __init__(self, log: list) -> None:
        self.log = log
        self.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self.log.append(("closed", self))


async def test_one_value_per_running_loop_made_when_first_asked_for():
    made = []
    holder = runtime.PerLoop(lambda: made.append(1) or object())
    assert made == []
    first = holder.get()
    assert holder.get() is first and made == [1]

    def other_loop():
        return asyncio.run(_get(holder))

    assert await asyncio.to_thread(other_loop) is not first  # another loop, another value
    assert holder.get() is not first  # and back here: this loop's value was replaced


async def _get(holder):
    return holder.get()


async def test_use_and_reset_change_the_factory_and_drop_the_value():
    holder = runtime.PerLoop(lambda: "default")
    assert holder.get() == "default"
    holder.use(lambda: "injected")
    assert holder.get() == "injected"
    runtime.reset()
    assert holder.get() == "default"


async def test_aclose_closes_only_this_loops_value():
    log = []
    holder = runtime.PerLoop(lambda: Resource(log), close=Resource.close)
    await holder.aclose()  # nothing made yet: nothing to close
    value = holder.get()
    await holder.aclose()
    assert log == [("closed", value)]
    assert holder.get() is not value


def test_reset_calls_every_registered_reset():
    calls = []

    @runtime.resettable
    def reset():
        calls.append(1)

    try:
        runtime.reset()
        assert calls == [1]
    finally:
        runtime._resets.remove(reset)


async def test_stop_waits_for_background_work_then_stoppers_then_closes_resources():
    order = []

    async def work():
        await asyncio.sleep(0.05)
        order.append("background")

    class Writer:
        async def stop(self, deadline=None):
            order.append(("writer", deadline is not None and deadline >= 1.0))
            return True

    writer = Writer()
    runtime.on_stop(writer)
    holder = runtime.PerLoop(lambda: "client", close=lambda value: _append(order, "closed"))
    holder.get()
    runtime.spawn(work())
    try:
        assert await runtime.stop(5)
    finally:
        runtime._stoppers.remove(writer)
    assert order == ["background", ("writer", True), "closed"]


async def _append(order, item):
    order.append(item)


async def test_stop_says_when_a_stopper_could_not_finish():
    class Stuck:
        async def stop(self, deadline=None):
            return False

    stuck = Stuck()
    runtime.on_stop(stuck)
    try:
        assert not await runtime.stop(1)
    finally:
        runtime._stoppers.remove(stuck)


async def test_a_spawned_task_is_held_until_it_is_done():
    task = runtime.spawn(asyncio.sleep(0.01))
    assert task in runtime._tasks
    await runtime.background()
    assert task.done() and task not in runtime._tasks


async def test_stop_waits_for_the_work_a_background_task_starts_as_it_ends():
    """A stream's cleanup finishes its request, which spawns the settlement of its limits: the
    shutdown must wait for that one too, before it closes the Redis client under it."""
    order = []

    async def settle():
        await asyncio.sleep(0.05)
        order.append("settled")

    async def cleanup():
        await asyncio.sleep(0.05)
        order.append("cleaned")
        runtime.spawn(settle())

    runtime.spawn(cleanup())
    await runtime.background(5)
    order.append("background returned")
    assert order == ["cleaned", "settled", "background returned"]


async def test_background_gives_up_at_its_deadline():
    never = runtime.spawn(asyncio.sleep(3600))
    await runtime.background(0.05)
    assert not never.done()
    never.cancel()
