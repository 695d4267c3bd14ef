"""Text queries per second of one shared SearchEngine, called from 1 thread and from 8 at once.

    python benchmarks/bench_engine_threads.py --images ../shared/datasets/flickr8k-1k/images
    python benchmarks/bench_engine_threads.py --index IDX            # an existing index
    ... --captions ../shared/datasets/flickr8k-1k/captions.txt       # varied queries (default: 16 fixed ones)

With --images the photos are indexed first into a temporary folder (offline default; the Indexer
prepares the exported query encoders and the caption bank). The engine is opened without a model, as
`xmodal search` and a server open it: queries run the exported ONNX text path, then the whole second
stage (QB-Norm, the learned fusion). Each thread count answers the same queries, after one untimed pass.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import threading
import time
from pathlib import Path

from xmodal.indexer.indexing import Indexer
from xmodal.indexer.models.embedding import load_model
from xmodal.indexer.store.schema import ImageRow
from xmodal.search import SearchEngine

QUERIES = [
    "a dog running on the grass",
    "two children playing in the snow",
    "a man riding a bike down a dirt road",
    "a girl in a pink dress on the stairs",
    "people walking on a busy city street",
    "a surfer riding a big wave",
    "a black and white dog jumping over a fence",
    "a group of people sitting at a table",
    "a boy swimming in a pool",
    "a climber on a rock wall",
    "a woman with a red umbrella in the rain",
    "two dogs fighting over a ball",
    "a baseball player swinging the bat",
    "a child sliding down a slide",
    "a brown horse in a field",
    "a man sitting on a bench by the water",
]


def run(engine: SearchEngine, threads: int, queries: list[str], k: int) -> float:
    """Queries per second with `threads` threads sharing the engine, each taking every threads-th query."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker(part: list[str]) -> None:
        barrier.wait()
        try:
            for query in part:
                engine.search_text(query, k=k)
        except BaseException as e:  # noqa: BLE001 - reported after the run
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(queries[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return len(queries) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", type=Path, help="an existing index")
    where.add_argument("--images", type=Path, help="a photo folder, indexed first into a temporary index")
    parser.add_argument("--queries", type=int, default=400, help="queries per thread count")
    parser.add_argument("--captions", type=Path, help="a captions CSV (image,caption) to draw varied queries from")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-threads-") as tmp:
        index = args.index
        if index is None:
            index = Path(tmp) / "idx"
            model = load_model()
            summary = Indexer(index, model=model).add_paths([args.images])
            print(f"indexed {summary.embedded} photos into {index}", flush=True)
        pool = QUERIES
        if args.captions is not None:
            with open(args.captions, encoding="utf-8", newline="") as f:
                pool = [row["caption"] for row in csv.DictReader(f)] or QUERIES
        queries = [pool[(i * 7919) % len(pool)] for i in range(args.queries)]
        with SearchEngine.open(index) as engine:
            # One untimed pass over the queries: the encoder session, the query bank, the fusion model and
            # the per-photo values the second stage keeps are warm for every thread count alike.
            run(engine, 1, queries, args.k)
            images = engine.store.metadata.count(ImageRow)
            print(
                f"index: {images} photos; {len(queries)} text queries, k={args.k}; model path: "
                f"{'exported ONNX' if engine.uses_exported_encoders else 'full model'}"
            )
            for threads in args.threads:
                rate = run(engine, threads, queries, args.k)
                print(f"{threads:>2} thread(s): {rate:7.1f} queries/s", flush=True)


if __name__ == "__main__":
    main()
