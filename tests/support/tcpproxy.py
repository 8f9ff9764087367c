"""A TCP proxy to cut a server off: passes bytes both ways, refuses connections, or swallows
everything (packets dropped: the client waits for answers that never come)."""

from __future__ import annotations

import asyncio
import threading

from tests.support.processes import free_port


class TcpProxy:
    """127.0.0.1:`port` → `host`:`target_port`, in a thread of its own. `mode`: "pass",
    "refuse" (new connections are closed at once, open ones cut) or "blackhole"."""

    def __init__(self, host: str, target_port: int) -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self.mode = "pass"
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def stop(self) -> None:
        async def shut() -> None:
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set(self, mode: str) -> None:
        """Switch modes. A blackhole keeps open connections, silent; any other mode cuts them
        (after a blackhole they are out of step)."""
        assert mode in ("pass", "refuse", "blackhole")

        def switch() -> None:
            self.mode = mode
            if mode != "blackhole":
                for writer in list(self._writers):
                    writer.transport.abort()
                self._writers.clear()

        self._loop.call_soon_threadsafe(switch)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        opened = {writer}
        self._writers |= opened
        try:
            if self.mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            opened.add(upstream_writer)
            self._writers |= opened
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except OSError:
            pass
        finally:
            for each in opened:
                each.transport.abort()
            self._writers -= opened

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.mode == "pass":  # else swallowed
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
