"""Time from starting `xmodal index` on a new machine (empty cache) to its first embedded photo.

    python benchmarks/bench_first_run.py [--photos DIR] [--runs 3] [--no-torch]

Each run starts a fresh interpreter with an empty XMODAL_CACHE and a new index and runs the CLI's
own entry point; the clock starts just before the process is started and stops when the run's
progress first reports an embedded photo (the Indexer's progress callback, which the CLI's bar
draws). --no-torch blocks torch and the model libraries in the child (a core install). Prints
each run's seconds to the first photo and to the end of the command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the child: reports the first embedded photo on stderr, then runs the CLI as `xmodal index`.
CHILD = """
import sys, time
import xmodal.indexer.indexing as indexing
start = float(sys.argv.pop(1))
original = indexing.Indexer.__init__
def __init__(self, *args, **kwargs):
    report = kwargs.get("on_progress")
    def on_progress(progress):
        if progress.stage == "index" and progress.done > 0 and not getattr(on_progress, "seen", False):
            on_progress.seen = True
            print(f"FIRST_PHOTO {time.time() - start:.3f}", file=sys.stderr, flush=True)
        if report is not None:
            report(progress)
    kwargs["on_progress"] = on_progress
    original(self, *args, **kwargs)
indexing.Indexer.__init__ = __init__
from xmodal.cli.app import main
sys.argv[0] = "xmodal"
main()
"""

BLOCK = (
    "import sys\nfor m in ('torch', 'torchvision', 'timm', 'open_clip', 'transformers'):\n    sys.modules[m] = None\n"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=Path, default=Path("/work/shared/datasets/flickr8k-1k/images"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "XMODAL_CACHE": f"{tmp}/cache"}
            if args.no_torch:
                Path(tmp, "site").mkdir()
                Path(tmp, "site", "sitecustomize.py").write_text(BLOCK)
                env["PYTHONPATH"] = f"{tmp}/site"
            start = time.time()
            cmd = [sys.executable, "-c", CHILD, str(start), "index", str(args.photos), "--index", f"{tmp}/idx"]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            total = time.time() - start
            first = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("FIRST_PHOTO")]
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-300:]}"
            print(f"run {run + 1}: first photo {first[0] if first else '-'} s, command {total:.1f} s ({status})")


if __name__ == "__main__":
    main()
