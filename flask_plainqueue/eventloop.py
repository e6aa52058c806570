"""The event loop async tasks run on: one per worker, on a thread of its
own, started when the first async task runs."""

from __future__ import annotations

import asyncio
import threading


class EventLoop:
    """A worker's event loop for async tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        """The running loop, started if need be."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_loop,
                    args=(loop,),
                    name="plainqueue-asyncio",
                    daemon=True,
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the loop."""
        loop, self._loop = self._loop, None
        if loop is not None:
            # Cancel what still runs (past the grace period) and let it unwind
            # before the loop stops, instead of destroying pending tasks.
            asyncio.run_coroutine_threadsafe(_cancel_all_and_stop(), loop)


async def _cancel_all_and_stop() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.get_running_loop().stop()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    # Closing here, once ``close()`` has stopped the loop, releases the loop's
    # self-pipe sockets; each drain() would otherwise leak two file descriptors.
    try:
        loop.run_forever()
    finally:
        loop.close()
