"""A driver process for the Ray tests: `python -m tests.ray_driver INDEX PHOTOS ADDRESS [DELAY]`.

Indexes PHOTOS with the fake encoder (slowed to DELAY seconds a batch, so a test can kill this
driver mid-run) on the Ray cluster at ADDRESS, then prints one JSON line: the summary and the
nodes the cluster had.
"""

from __future__ import annotations

import json
import sys
import time


def slow_fake_model(delay: float):  # noqa: ANN201 - an EmbeddingModel; picklable (shipped to the actors)
    from tests.fakes import fake_model

    model = fake_model()
    embed = model.embed_pixels

    def slow_embed(pixels):  # noqa: ANN001, ANN202
        time.sleep(delay)
        return embed(pixels)

    model.embed_pixels = slow_embed  # type: ignore[method-assign]
    return model


def main() -> None:
    from xmodal.indexer import Indexer
    from xmodal.indexer.distributed import RayOptions

    index_dir, photos, address = sys.argv[1:4]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    indexer = Indexer(
        index_dir, model=slow_fake_model(delay), batch_size=4, ray=RayOptions(address=address, decode_batch=4)
    )
    summary = indexer.add_paths([photos])
    import ray

    ray.init(address=address)  # the run shut its connection down; look at the cluster once more
    nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    print(json.dumps({"summary": summary.as_dict(), "nodes": nodes}))


if __name__ == "__main__":
    main()
