"""Ray's overhead on one machine: the same photos through the single-process pipeline and through
`--ray` (a local cluster), in the same run: cold (the run starts its cluster, as `xmodal index
--ray` does) and warm (a cluster already up that has run once).

    python benchmarks/bench_distributed.py [--images /work/shared/datasets/flickr8k-1k/images]
        [--limit 1000] [--cpus 2] [--model xmodal-lite] [--json]

Prints images/s of each (fresh index each, model load excluded from the local figure: it is
loaded once before either run; the Ray figure includes its actors' model load, as a user sees it,
and is also given for the embedding stream alone), their ratio (goal: Ray keeps >= 80% of the
single-process throughput here, where it has nothing to gain), and checks both runs stored the
same rows with vectors within 1e-5.

It also measures Ray's own floor, with no xmodal code: `import ray`, `ray.init`, a one-block Ray Data
pipeline of the same shape (a task map, then a one-actor pool) and `ray.shutdown`. A cold run pays
at least that floor plus the photos at the streaming rate, so `cold_ratio_bound` = local seconds /
(floor + photos / streaming rate) is the best cold ratio this machine allows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xmodal.indexer import Indexer, load_model
from xmodal.indexer.distributed import RayOptions
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow, blob_to_vector

DEFAULT_IMAGES = Path("/work/shared/datasets/flickr8k-1k/images")


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    store = IndexStore.open(index_dir)
    try:
        with store.metadata.session() as s:
            return {r.path: blob_to_vector(r.vector).copy() for r in s.query(ImageRow)}
    finally:
        store.close()


# Run in a fresh interpreter, so that `import ray` is counted as a user's process pays it.
_FLOOR = """
import json, time
started = time.perf_counter()
import ray, ray.data
imported = time.perf_counter()
ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
initialised = time.perf_counter()
class Identity:
    def __call__(self, batch):
        return batch
ray.data.DataContext.get_current().enable_progress_bars = False
ds = ray.data.from_items([{"i": k} for k in range(16)]).map_batches(lambda b: b, batch_size=16, num_cpus=1)
ds = ds.map_batches(Identity, batch_size=16, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
rows = sum(len(b["i"]) for b in ds.iter_batches(batch_size=None))
streamed = time.perf_counter()
ray.shutdown()
done = time.perf_counter()
print(json.dumps({"import": imported - started, "init": initialised - imported,
                  "one_block_pipeline": streamed - initialised, "shutdown": done - streamed, "total": done - started}))
"""


def ray_floor(cpus: int) -> dict[str, float]:
    """Seconds of Ray's own start, one-block pipeline and stop, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _FLOOR.replace("CPUS", str(int(cpus)))], capture_output=True, text=True, check=True
    )
    return {k: round(v, 2) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=1000, help="photos to index (a symlinked subset)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--model", default="xmodal-lite")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="xmodal-bench-dist-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        for source in sorted(p for p in args.images.iterdir() if p.is_file())[: args.limit]:
            (photos / source.name).symlink_to(source.resolve())
        count = sum(1 for _ in photos.iterdir())
        model = load_model(args.model)  # loaded once, outside both timings

        started = time.perf_counter()
        local = Indexer(work / "local", model=model, batch_size=args.batch_size).add_paths([photos])
        local_s = time.perf_counter() - started

        # cold: the run starts its own local cluster, as `xmodal index --ray` does
        started = time.perf_counter()
        on_ray = Indexer(
            work / "ray", model=args.model, batch_size=args.batch_size, ray=RayOptions(num_cpus=args.cpus)
        ).add_paths([photos])
        ray_s = time.perf_counter() - started

        # warm: a cluster that is already up and has run once (a long-lived cluster's case)
        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            warmup = work / "warmup"
            warmup.mkdir()
            for source in sorted(photos.iterdir())[:8]:
                (warmup / source.name).symlink_to(source.resolve())
            Indexer(work / "warm-idx", model=args.model, batch_size=args.batch_size, ray=RayOptions()).add_paths(
                [warmup]
            )
            started = time.perf_counter()
            warm = Indexer(work / "ray-warm", model=args.model, batch_size=args.batch_size, ray=RayOptions()).add_paths(
                [photos]
            )
            warm_s = time.perf_counter() - started
        finally:
            ray.shutdown()

        floor = ray_floor(args.cpus)

        a, b = _vectors(work / "local"), _vectors(work / "ray")
        same_rows = set(a) == set(b)
        max_diff = max((float(np.abs(a[p] - b[p]).max()) for p in a if p in b), default=0.0)
        first = on_ray.timings.get("first_batch", 0.0)
        stream_s = on_ray.timings.get("cluster", 0.0) + on_ray.timings.get("write", 0.0) - first
        stream_ips = (
            (on_ray.embedded - args.batch_size) / stream_s
            if on_ray.embedded > args.batch_size and stream_s > 0
            else None
        )
        result = {
            "photos": count,
            "cpus": args.cpus,
            "model": args.model,
            "local_images_per_s": round(local.embedded / local_s, 2),
            "ray_images_per_s": round(on_ray.embedded / ray_s, 2),
            "ray_seconds": round(ray_s, 2),
            "local_seconds": round(local_s, 2),
            "ray_over_local": round((on_ray.embedded / ray_s) / (local.embedded / local_s), 3),
            "ray_first_batch_s": round(first, 2),
            # after the first batch: the steady rate of a long run (None when one batch was all)
            "ray_stream_images_per_s": round(stream_ips, 2) if stream_ips else None,
            "ray_warm_images_per_s": round(warm.embedded / warm_s, 2),
            "ray_warm_over_local": round((warm.embedded / warm_s) / (local.embedded / local_s), 3),
            "ray_floor_s": floor,
            # the best cold ratio possible here: Ray's floor plus every photo at the streaming rate
            "cold_ratio_bound": round(local_s / (floor["total"] + on_ray.embedded / stream_ips), 3)
            if stream_ips
            else None,
            "ray_timings": on_ray.as_dict()["timings"],
            "local_timings": local.as_dict()["timings"],
            "same_rows": same_rows,
            "max_vector_difference": max_diff,
        }
        if args.json:
            print(json.dumps(result))
        else:
            for key, value in result.items():
                print(f"{key:>24}: {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
