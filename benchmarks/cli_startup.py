"""Cold start of `compatctl eval` and `inspect` on a tiny input (target < 0.5 s on a quiet 2-core machine).

    python benchmarks/cli_startup.py --repeats 7 [--other-root /path/to/another/checkout]

With --other-root, each compatctl command also runs with that checkout first on PYTHONPATH,
alternating with this one inside each repeat (a paired comparison on a shared machine).

Each command runs as a fresh `python -m compatctl ...` process; commands alternate within each
repeat (a shared machine's load falls on all of them); the table shows median and minimum wall
time, next to a bare `python -c "import numpy"` for scale, and the heavy modules each command
imported (torch, pyarrow, faiss, compatctl.transform, compatctl.backfill, ...). Children run in a temporary
folder: `python -m` puts the working folder first on sys.path, which would shadow PYTHONPATH.
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
    parser.add_argument("--other-root", help="another compatctl checkout to time alongside this one")
    args = parser.parse_args()
    import os

    here = str(Path(__file__).resolve().parent.parent)
    roots = {"": here, **({" [other]": args.other_root} if args.other_root else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.npz"
        rng = np.random.default_rng(0)
        np.savez(path, embeddings=rng.normal(size=(200, 16)).astype(np.float32), labels=rng.integers(0, 5, 200))
        commands = {"python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
                    "compatctl --version": [sys.executable, "-m", "compatctl", "--version"],
                    "compatctl inspect E": [sys.executable, "-m", "compatctl", "inspect", str(path)],
                    "compatctl eval E E": [sys.executable, "-m", "compatctl", "eval", str(path), str(path)]}
        runs = {name + tag: (command, root) for name, command in commands.items()
                for tag, root in (roots.items() if command[1] == "-m" else [("", here)])}
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (command, root) in runs.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=tmp, env={**os.environ, "PYTHONPATH": root})
                times[name].append(time.perf_counter() - start)
        heavy = {}
        for name, (command, root) in runs.items():
            if command[1] == "-m":
                done = subprocess.run([sys.executable, "-c", LIST_HEAVY, *command[3:]], capture_output=True, text=True, cwd=tmp,
                                      env={**os.environ, "PYTHONPATH": root})
                heavy[name] = done.stderr.strip().splitlines()[-1].removeprefix("HEAVY ")
    print(f"{'command':<36} {'median s':>9} {'min s':>7}  heavy modules imported")
    for name, values in times.items():
        print(f"{name:<36} {statistics.median(values):9.3f} {min(values):7.3f}  {heavy.get(name, '')}")


if __name__ == "__main__":
    main()
