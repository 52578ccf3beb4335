"""Run a Python module and record the peak resident memory of this process.

Usage: ``python -m bench.peak_memory OUT_FILE MODULE [ARGS...]``. Writes ``VmHWM``
(KiB) from ``/proc/self/status`` to ``OUT_FILE`` when the module exits.

Why not ``wait4``'s ``ru_maxrss``: Linux carries a process's high-water mark across
``fork`` and ``exec``, so every child of a big benchmark process would report at least
the parent's size. ``VmHWM`` belongs to the memory map created at ``exec``.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def peak_resident_kib() -> int:
    """This process's peak resident set size since it started, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def main() -> None:
    """Run ``MODULE`` as ``__main__`` with the remaining arguments, noting the peak at exit."""
    out_file, module, *arguments = sys.argv[1:]
    atexit.register(lambda: Path(out_file).write_text(str(peak_resident_kib())))
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
