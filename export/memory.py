"""Peak resident memory of a process tree, sampled from /proc (Linux), for the export manifests.

`TreeSampler(root_pid)` sums the proportional set size (Pss, /proc/PID/smaps_rollup) over
`root_pid` and all its descendants every `interval` seconds in a background thread and keeps the
largest sum.  Pss is a process's resident pages with each page shared by n processes counted 1/n:
the sum over the tree is the tree's resident memory with every page once.  Summing VmRSS instead
counted shared pages once per process: a 17 GB ExecuTorch exporter that forked a helper (the child
shares all its pages until it execs) read as 35.5 GB, and two processes mapping one checkpoint
counted it twice.  File pages a process has mapped and touched (llama.cpp's mmap of a GGUF,
safetensors' mmap of a checkpoint) count, as the kernel reports them.  Where smaps_rollup cannot be
read (kernels before 4.14) VmRSS stands in.  A peak shorter than the interval can be missed:
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` (the largest single finished child's RSS, exact)
is recorded beside it.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

INTERVAL_S = 0.25


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _kb_field(path: str, field: str) -> int | None:
    """The `field:` line's value (kB) of a /proc file, in bytes; None when the file or the line is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _resident_bytes(pid: int) -> int:
    """Pss of `pid` (shared pages split among their sharers); VmRSS where smaps_rollup is missing."""
    pss = _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")
    return pss if pss is not None else _kb_field(f"/proc/{pid}/status", "VmRSS") or 0


def tree_resident_bytes(root: int) -> int:
    """The sum of Pss over `root` and its descendants now: the tree's resident memory, each page once."""
    children = _children()
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _resident_bytes(pid)
        todo.extend(children.get(pid, []))
    return total


class TreeSampler:
    """with TreeSampler(os.getpid()) as s: ...  -> s.peak_bytes"""

    def __init__(self, root: int | None = None, interval: float = INTERVAL_S) -> None:
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = Path("/proc/self/status").is_file()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_resident_bytes(self.root))
        self.samples += 1

    def __enter__(self) -> TreeSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()

    def report(self) -> dict[str, object]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        return {
            "tree_peak_mb": round(self.peak_bytes / 2**20, 1),
            "largest_child_mb": round(children, 1),
            "samples": self.samples,
            "method": (f"sum of Pss (smaps_rollup) over the export's process tree (driver, worker, its children), "
                       f"sampled from /proc every {self.interval} s (mapped file pages count; a page shared by n "
                       f"processes counts 1/n in each, so once in all); largest_child_mb: getrusage(RUSAGE_CHILDREN) "
                       f"ru_maxrss, the largest single child process's RSS so far in the driver's life"),
        }
