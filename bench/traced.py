"""Run a Python script under tracemalloc, dumping a snapshot on each SIGUSR1 (bench.streams).

    python -m bench.traced manage.py serve ...    (env TRACEMALLOC_DUMP=prefix)

Each SIGUSR1 writes `<prefix>.<n>` (n = 1, 2, …: tracemalloc's own dump format, loaded with
`tracemalloc.Snapshot.load`), then `<prefix>.<n>.done`, so that the benchmark knows it is whole.
The snapshot is taken on the server's own thread, between two bytecodes: the event loop stands
still meanwhile, which a memory measurement does not mind. For benchmarks only: tracemalloc
costs CPU and memory of its own.
"""

from __future__ import annotations

import itertools
import os
import runpy
import signal
import sys
import tracemalloc


def main() -> None:
    prefix = os.environ["TRACEMALLOC_DUMP"]
    numbers = itertools.count(1)

    def dump(signum, frame) -> None:
        path = f"{prefix}.{next(numbers)}"
        tracemalloc.take_snapshot().dump(path)
        open(f"{path}.done", "w").close()

    tracemalloc.start(int(os.environ.get("TRACEMALLOC_FRAMES", "1")))
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
