"""Whole-process time and peak RSS of a child, shared by the benchmark scripts (stdlib only).

A script run as ``python benchmarks/X.py`` has benchmarks/ first on sys.path, so ``import _measure``
works from every script here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

# A lean wrapper runs a command as its child and prints (seconds, the child's peak RSS in MB). A
# child forked from a big benchmark process would report that process's RSS as its own peak; the
# wrapper reads RUSAGE_CHILDREN of its own (fresh) child instead.
PEAK_RSS_WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def run_phase(script: str, args: list[str]) -> tuple[float, float]:
    """Run ``script`` with ``args`` in a child process; return (seconds, the child's own peak RSS in MB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"phase {args} of {script} failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024
