"""Indexing into SQLite and into PostgreSQL: the whole run, the SQL part alone, an unchanged re-index.

    python benchmarks/bench_store.py [--images ../shared/datasets/flickr8k-1k/images] [--model xmodal-lite]
                                     [--backends sqlite,postgresql] [--pg-url postgresql+psycopg://…] [--json]

For each backend, into a fresh index (and a fresh PostgreSQL database):
  images_per_s    `Indexer.add_paths` over the folder, model load excluded (decode + embed + write)
  sql_rows_per_s  rows / seconds spent in the batches' SQL transactions (summary.timings["sql"]):
                  the SQL part alone, measured inside the same run
  reindex_s       a second `add_paths` over the unchanged folder (nothing embedded)
and, without the model, a bulk-write micro-benchmark:
  bulk_rows_per_s rows of the same shape (vector + tower features) written 32 a transaction
                  through MetadataStore.insert_rows, as the indexer writes them

Without --pg-url a throw-away PostgreSQL server is started (tests/postgres_server.py; the Debian
`postgresql` package; as root it runs as the `postgres` user), with fsync on, as a real one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres_server

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k" / "images"


def _bulk_rows_per_s(url: str, rows: int, dim: int, features: int, batch: int = 32) -> float:
    from xmodal.indexer.store.schema import ImageRow, MetadataStore, features_to_blob, utcnow, vector_to_blob

    store = MetadataStore.connect(url)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((rows, dim)).astype(np.float32)
    feats = rng.standard_normal((rows, features)).astype(np.float16) if features else None
    now = utcnow()
    started = time.perf_counter()
    for start in range(0, rows, batch):
        values = [
            dict(
                path=f"/bench/{i:07d}.jpg",
                size=1000 + i,
                mtime_ns=i,
                content_hash=f"{i:040x}",
                width=500,
                height=375,
                taken_at=None,
                model="bench",
                indexed_at=now,
                vector=vector_to_blob(vecs[i]),
                features=features_to_blob(feats[i]) if feats is not None else None,
            )
            for i in range(start, min(rows, start + batch))
        ]
        with store.session() as s, s.begin():
            store.insert_rows(s, ImageRow, values)
    seconds = time.perf_counter() - started
    store.close()
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", default="xmodal-lite")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=None, help="an existing server's database (it must be empty)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick check)")
    parser.add_argument("--bulk-rows", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from xmodal.indexer import Indexer, load_model

    images = args.images
    work = Path(tempfile.mkdtemp(prefix="xmodal-bench-store-"))
    if args.limit:
        subset = work / "photos"
        subset.mkdir()
        for path in sorted(images.iterdir())[: args.limit]:
            (subset / path.name).symlink_to(path.resolve())
        images = subset
    model = load_model(args.model)
    # the offline default stores its towers' 1664 features (float16) with each photo
    features = 1664 if getattr(getattr(model.spec, "capabilities", None), "tower_features", False) else 0

    server = None
    results = []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                urls = (None, f"sqlite:///{work / 'bulk.db'}")
            else:
                if args.pg_url:
                    urls = (args.pg_url, args.pg_url)
                else:
                    from tests.postgres_server import start_server

                    server = server or start_server(durable=True)
                    urls = (server.create_database("bench"), server.create_database("bulk"))
            index_dir = work / f"idx-{backend}"
            summary = Indexer(index_dir, model=model, db_url=urls[0]).add_paths([images])
            started = time.perf_counter()
            again = Indexer(index_dir, model=model, db_url=urls[0]).add_paths([images])
            reindex = time.perf_counter() - started
            sql = summary.timings.get("sql", 0.0)
            results.append(
                {
                    "backend": backend,
                    "photos": summary.embedded,
                    "images_per_s": round(summary.images_per_second, 2),
                    "sql_s": round(sql, 3),
                    "sql_rows_per_s": round(summary.embedded / sql, 1) if sql else None,
                    "reindex_s": round(reindex, 3),
                    "reindex_unchanged": again.unchanged,
                    "bulk_rows_per_s": round(_bulk_rows_per_s(urls[1], args.bulk_rows, model.dim, features), 1),
                    "timings": {k: round(v, 3) for k, v in summary.timings.items()},
                }
            )
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(results))
        return
    header = f"{'backend':<11}{'photos':>7}{'images/s':>10}{'SQL s':>8}{'SQL rows/s':>12}"
    print(header + f"{'re-index s':>12}{'bulk rows/s':>13}")
    for r in results:
        print(
            f"{r['backend']:<11}{r['photos']:>7}{r['images_per_s']:>10}{r['sql_s']:>8}{str(r['sql_rows_per_s']):>12}{r['reindex_s']:>12}{r['bulk_rows_per_s']:>13}"
        )


if __name__ == "__main__":
    main()
