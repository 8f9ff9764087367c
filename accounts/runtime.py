"""What a process holds beyond one request, in one place that tests and the shutdown can walk.

- `PerLoop`: a resource bound to one event loop (an asyncio client cannot cross loops), made
  lazily for the running loop and closed on shutdown.
- `resettable`: registers a module's `reset()` (caches, a circuit breaker); `reset()` calls
  them all, so that no test sees what the one before left.
- `spawn`: background work a request leaves behind (a stream's cleanup, a settlement), held
  until it is done; `on_stop` registers what must finish before the loop stops (the usage
  writer). `stop()` runs it all down in order: on shutdown and at the end of a test.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Stoppable(Protocol):
    async def stop(self, deadline: float | None = None) -> bool: ...


_resets: list[Callable[[], None]] = []
_loop_bound: weakref.WeakSet[PerLoop] = weakref.WeakSet()
_stoppers: list[Stoppable] = []
_tasks: set[asyncio.Task] = set()  # strong references until they are done


class PerLoop(Generic[T]):
    """One `T` per running event loop, made by `factory` when first asked for there."""

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[Any]] | None = None) -> None:
        self._default = self._factory = factory
        self._close = close
        self._value: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _loop_bound.add(self)

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._value, self._loop = self._factory(), loop
        return self._value

    def drop(self) -> None:
        """Forget the value without closing it; the next `get()` makes a new one."""
        self._value, self._loop = None, None

    def use(self, factory: Callable[[], T]) -> None:
        """Make new values with this factory from now on (tests, benchmarks)."""
        self._factory = factory
        self.drop()

    def reset(self) -> None:
        self.use(self._default)

    async def aclose(self) -> None:
        """Close the running loop's value, if there is one."""
        value, loop = self._value, self._loop
        self.drop()
        if value is not None and self._close is not None and loop is asyncio.get_running_loop():
            await self._close(value)


def resettable(reset: Callable[[], None]) -> Callable[[], None]:
    """Decorator: `reset()` calls this function too."""
    _resets.append(reset)
    return reset


def reset() -> None:
    """Every registered cache and state back to how it starts, every loop-bound value dropped
    (tests). Not for the server: counters start again from zero."""
    for function in _resets:
        function()
    for resource in list(_loop_bound):
        resource.reset()
    # Tasks of a loop that is gone never end; those of a running one are still waited for.
    _tasks.difference_update([task for task in _tasks if task.get_loop().is_closed()])


def spawn(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Run `coroutine` on the running loop without waiting for it; `stop()` waits for it."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def background(seconds: float | None = None) -> None:
    """Wait (at most `seconds`) for the running loop's background tasks to end, and for those
    they start as they end (a stream's cleanup finishes its request, which settles its limits)."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while pending := [task for task in _tasks if task.get_loop() is loop and not task.done()]:
        timeout = None if deadline is None else deadline - loop.time()
        if timeout is not None and timeout <= 0:
            return
        await asyncio.wait(pending, timeout=timeout)


def on_stop(stoppable: Stoppable) -> None:
    """`stop()` calls `stoppable.stop(seconds left)` after the background tasks have ended."""
    _stoppers.append(stoppable)


async def stop(seconds: float | None = None) -> bool:
    """Run the loop's work down, in order: background tasks end (given `seconds`), then each
    `on_stop` (given the rest, at least a second), then every loop-bound resource closes. True
    when each `on_stop` finished its work (the usage writer wrote everything)."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds

    def left(at_least: float) -> float | None:
        return None if deadline is None else max(at_least, deadline - loop.time())

    await background(left(0.1))
    done = True
    for stoppable in _stoppers:
        done = await stoppable.stop(left(1.0)) and done
    for resource in list(_loop_bound):
        await resource.aclose()
    return done
