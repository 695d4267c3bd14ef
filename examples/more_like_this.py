"""'More like this' recommendations for a list of items, with xmodal as a library.

    python examples/more_like_this.py --index IDX [--k 5] [ITEM_ID ...]

For each item (default: the first three photos of the index) prints the k most similar photos,
never the item itself, and one recommendation for the whole list (the mean of their vectors).
"""

from __future__ import annotations

import argparse

import numpy as np

from xmodal.search import SearchEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("items", nargs="*", type=int)
    args = parser.parse_args()

    with SearchEngine.open(args.index) as engine:
        items = args.items or [hit.id for hit in engine.search_text("a photo", k=3, rerank=False)]
        for item in items:
            print(f"more like #{item}:")
            for hit in engine.similar(item, k=args.k):
                print(f"  {hit.score:.3f}  #{hit.id}  {hit.path}")
        # A taste profile: the mean of the items' stored vectors, searched as one query.
        profile = engine.vectors(items).mean(axis=0)
        scores, ids = engine.search_vectors(profile[None] / np.linalg.norm(profile), args.k + len(items))
        picks = [(s, i) for s, i in zip(scores[0], ids[0]) if i >= 0 and i not in items][: args.k]
        print("for the whole list:", ", ".join(f"#{i} ({s:.3f})" for s, i in picks))


if __name__ == "__main__":
    main()
