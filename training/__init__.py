"""Maintainer scripts that make the shipped files in data/ (not installed; run from a clone's root).

    python -m training.offline_head --data ../shared/datasets/flickr8k-1k --out data/offline_head.pt
    python -m training.offline_fusion --data ../shared/datasets/flickr8k-1k --out data/offline_fusion.npz
    python -m training.export_offline_onnx --out data/xmodal-lite   # the ONNX files the core install runs

`xmodal train` builds a user's head with the same function as offline_head (xmodal.search.training.head).
"""
