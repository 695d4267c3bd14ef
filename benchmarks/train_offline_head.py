"""Reproduce the shipped offline head (data/offline_head.pt) from the flickr8k-1k train split.

    python benchmarks/train_offline_head.py --data ../shared/datasets/flickr8k-1k --out data/offline_head.pt

The training itself lives in the package (`python -m xmodal.search.training.offline_head`, the same
options), because `xmodal train` builds a user's head with the same function; this script is its
entry point next to the benchmark that chose the head's recipe (shift_protocol.py).
"""

from xmodal.search.training.offline_head import main

if __name__ == "__main__":
    main()
