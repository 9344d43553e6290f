"""Cold start of `compatctl eval` and `inspect` on a tiny input (target < 0.5 s on a quiet 2-core machine).

    python benchmarks/cli_startup.py --repeats 7

Each command runs as a fresh `python -m compatctl ...` process; commands alternate within each
repeat (a shared machine's load falls on all of them); the table shows median and minimum wall
time, next to a bare `python -c "import numpy"` for scale, and the heavy modules each command
imported (torch, pyarrow, faiss, compatctl.transform, compatctl.backfill, ...).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEAVY = ("torch", "pyarrow", "faiss", "ray", "matplotlib", "compatctl.transform", "compatctl.backfill", "compatctl.train")
LIST_HEAVY = ("import sys, atexit, runpy; heavy = " + repr(HEAVY) + "; atexit.register(lambda: print('HEAVY', "
              "sorted({f for f in heavy for m in sys.modules if m == f or m.startswith(f + '.')}), file=sys.stderr)); "
              "sys.argv = ['compatctl'] + sys.argv[1:]; runpy.run_module('compatctl', run_name='__main__')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.npz"
        rng = np.random.default_rng(0)
        np.savez(path, embeddings=rng.normal(size=(200, 16)).astype(np.float32), labels=rng.integers(0, 5, 200))
        commands = {"python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
                    "compatctl --version": [sys.executable, "-m", "compatctl", "--version"],
                    "compatctl inspect E": [sys.executable, "-m", "compatctl", "inspect", str(path)],
                    "compatctl eval E E": [sys.executable, "-m", "compatctl", "eval", str(path), str(path)]}
        times = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
        heavy = {}
        for name, command in commands.items():
            if command[1] == "-m":
                done = subprocess.run([sys.executable, "-c", LIST_HEAVY, *command[3:]], capture_output=True, text=True)
                heavy[name] = done.stderr.strip().splitlines()[-1].removeprefix("HEAVY ")
    print(f"{'command':<28} {'median s':>9} {'min s':>7}  heavy modules imported")
    for name, values in times.items():
        print(f"{name:<28} {statistics.median(values):9.3f} {min(values):7.3f}  {heavy.get(name, '')}")


if __name__ == "__main__":
    main()
