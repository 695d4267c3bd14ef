"""Light query encoders: a model's text and image paths exported to ONNX, for any model.

A search needs only one path of the model. Importing torch, timm, open_clip and transformers to run
it costs seconds, so when an index run has the model loaded, both paths are exported once to the
user cache and a query runs one of them with onnxruntime, a torch-free tokenizer and Pillow. Each
export is described by a JSON sidecar (its graph, tokenizer, preprocessing), so the search side
reads data, not model-specific code. Same vectors as the torch path (tests compare them).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from PIL import Image

from xmodal.indexer.cache import cache_dir

if TYPE_CHECKING:
    import torch

    from xmodal.indexer.models.embedding import EmbeddingModel, IndexedPixels

__all__ = [
    "QueryTextEncoder",
    "QueryImageEncoder",
    "prepare_query_encoders",
    "export_text_encoder",
    "export_image_encoder",
    "sidecar_path",
    "StageProgress",
    "export_query_encoder",
    "export_image_query_encoder",
]

Kind = Literal["text", "image"]
# (stage, done, total): one-time preparations report through this, the CLI draws it.
StageProgress = Callable[[str, int, int], None]
# Bump when an exported graph, its sidecar or its preprocessing changes meaning (not for a faster
# graph of the same meaning: a bump sends every existing index back to the torch path until its
# next indexing run re-exports).
_FORMAT = "query-v3"
# Graphs above this size keep their weights in a side file that onnxruntime memory-maps: a 250 MB
# text tower then opens in a third of the time, which is most of a cold search.
_EXTERNAL_DATA_BYTES = 32 * 1024 * 1024


def _key(spec: str, kind: Kind) -> str:
    from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec

    return hashlib.sha256(f"{_FORMAT}|{kind}|{model_fingerprint(parse_model_spec(spec))}".encode()).hexdigest()[:24]


def sidecar_path(spec: str, kind: Kind) -> Path:
    """The JSON that describes the export of one path of this model: the one shipped with xmodal
    (the offline default), else the cache's (it exists once the export is done)."""
    from xmodal.indexer.models.spec import parse_model_spec

    shipped = parse_model_spec(spec).shipped_sidecar(kind)
    return shipped if shipped is not None else cache_dir() / "query-encoders" / f"{_key(spec, kind)}.json"


# --- export (torch side) -------------------------------------------------------------------------


@contextmanager
def _exportable() -> Iterator[None]:
    """PyTorch's fused attention kernel has no ONNX form: trace the plain attention instead, and
    put the process-wide switch back afterwards."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    saved = mha.get_fastpath_enabled() if mha is not None else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if mha is not None:
            mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            if mha is not None and saved is not None:
                mha.set_fastpath_enabled(saved)


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    target: Path,
    input_name: str,
    dynamic: dict[int, str],
    outputs: tuple[str, ...] = ("vectors",),
) -> None:
    """Export to `target` (plus `target.data` for large graphs) through temporary names."""
    import torch

    from xmodal.indexer.models.vit_export import uses_onnxruntime_operators

    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.onnx")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exportable():
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=[input_name],
                output_names=list(outputs),
                dynamic_axes={input_name: dynamic, **{name: {0: "batch"} for name in outputs}},
                dynamo=False,
                opset_version=17,
                custom_opsets={"com.microsoft": 1} if uses_onnxruntime_operators(module) else None,
            )
        if tmp.stat().st_size > _EXTERNAL_DATA_BYTES:
            import onnx

            graph = onnx.load(str(tmp))
            tmp.unlink()
            onnx.save_model(
                graph,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=f"{target.name}.data",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_sidecar(path: Path, description: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, **description}, indent=1), encoding="utf-8")
    os.replace(tmp, path)  # last: a sidecar only ever describes a finished export


def _text_graph(model: EmbeddingModel, folder: Path, key: str) -> tuple[Any, Any, dict[str, Any]] | None:
    """(module ids -> tower features, example ids, tokenizer description) or None when the towers'
    tokenizer has no torch-free twin (the full model then embeds queries)."""
    import torch

    from xmodal.indexer.models.embedding import OpenClipTowers
    from xmodal.indexer.models.offline_towers import OfflineTowers

    towers = model.towers
    if isinstance(towers, OfflineTowers):
        tokenizer = folder / f"{key}.tokenizer.json"
        tokenizer.write_text(towers.tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
        features = _call(copy.deepcopy(towers.text).float().cpu(), "forward", normalize=True)
        from xmodal.indexer.models.offline_towers import TEXT_MAX_TOKENS

        described = {
            "type": "hf",
            "file": tokenizer.name,
            "max_tokens": TEXT_MAX_TOKENS,
            "pad_id": towers.tokenizer.pad_token_id or 0,
        }
        return features, torch.tensor([[101, 1037, 3899, 102]], dtype=torch.long), described
    if isinstance(towers, OpenClipTowers):
        from open_clip import tokenizer as oc_tokenizer

        tok: Any = towers._tokenizer  # open_clip's SimpleTokenizer, checked below
        clean = {
            oc_tokenizer._clean_lower: "lower",
            oc_tokenizer._clean_whitespace: "whitespace",
            oc_tokenizer._clean_canonicalize: "canonicalize",
        }
        if type(tok) is not oc_tokenizer.SimpleTokenizer or tok.reduction_fn is not None or tok.clean_fn not in clean:
            return None
        merges = folder / f"{key}.bpe.txt.gz"
        shutil.copyfile(oc_tokenizer.default_bpe(), merges)
        clip = copy.deepcopy(towers.model).float().cpu().to(memory_format=torch.contiguous_format)
        features = _call(clip, "encode_text", normalize=False, kwargs={"normalize": True})
        described = {
            "type": "clip-bpe",
            "file": merges.name,
            "context_length": int(tok.context_length),
            "clean": clean[tok.clean_fn],
        }
        return features, tok(["a dog"]), described
    return None


def _call(owner: Any, method: str, normalize: bool = False, kwargs: dict[str, Any] | None = None) -> Any:
    """A module whose forward is `owner.method(x)`: the owner's weights become the graph's own
    (a closure over them would be traced as constants)."""
    import torch

    owner.requires_grad_(False)

    class Call(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.owner = owner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = getattr(self.owner, method)(x, **(kwargs or {}))
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    return Call()


def _image_graph(model: EmbeddingModel) -> Any:
    """A function pixels -> tower features over CPU fp32 copies of the towers, or None."""
    import torch

    from xmodal.indexer.models.embedding import OpenClipTowers
    from xmodal.indexer.models.offline_towers import OfflineTowers

    if isinstance(model.towers, OfflineTowers):
        towers = copy.deepcopy(model.towers).float().cpu()
        towers.torch_only()  # export the PyTorch graphs themselves
        return _call(towers, "image_features")
    if isinstance(model.towers, OpenClipTowers):
        from xmodal.indexer.models.vit_export import prepare_for_export

        clip = copy.deepcopy(model.towers.model).float().cpu().to(memory_format=torch.contiguous_format)
        prepare_for_export(clip.visual)  # the image tower runs at indexing speed: less work, same vectors
        return _call(clip, "encode_image", kwargs={"normalize": True})
    return None


def _projected(features: Any, head: Any, project: str, with_features: bool = False) -> Any:
    """features, then the projection head (if any), then L2 normalisation: the model's full path.
    with_features: the features are a second output (what an index that keeps them stores)."""
    import torch

    head = copy.deepcopy(head).float().cpu().requires_grad_(False) if head is not None else None

    class Projected(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.head = head

        def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            feats = self.features(x)
            out = getattr(self.head, project)(feats) if self.head is not None else feats
            vectors = torch.nn.functional.normalize(out.float(), dim=-1)
            return (vectors, feats) if with_features else vectors

    return Projected().eval()


def export_text_encoder(model: EmbeddingModel, sidecar: Path | None = None) -> Path | None:
    """Export the model's text path (tokens -> unit vectors) once; returns its sidecar, or None.
    sidecar: export there even when one exists elsewhere (training/export_offline_onnx.py)."""
    spec = str(model.spec)
    if sidecar is None:
        sidecar = sidecar_path(spec, "text")
        if sidecar.is_file():
            return sidecar
    try:
        folder, key = sidecar.parent, sidecar.stem
        folder.mkdir(parents=True, exist_ok=True)
        graph = _text_graph(model, folder, key)
        if graph is None:
            return None
        features, example, tokenizer = graph
        _export(
            _projected(features, model.head, "project_texts"),
            example,
            folder / f"{key}.onnx",
            "ids",
            {0: "batch", 1: "tokens"},
        )
        _write_sidecar(
            sidecar, {"kind": "text", "spec": spec, "onnx": f"{key}.onnx", "input": "ids", "tokenizer": tokenizer}
        )
    except Exception:  # an optimisation only: searches then load the model
        return None
    return sidecar


def export_image_encoder(model: EmbeddingModel, sidecar: Path | None = None) -> Path | None:
    """Export the model's image path (pixels -> unit vectors) once; returns its sidecar, or None.
    sidecar: export there even when one exists elsewhere (training/export_offline_onnx.py)."""
    spec = str(model.spec)
    if sidecar is None:
        sidecar = sidecar_path(spec, "image")
        if sidecar.is_file():
            return sidecar
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is None:
        return None
    try:
        import torch

        features = _image_graph(model)
        if features is None:
            return None
        folder, key = sidecar.parent, sidecar.stem
        example = torch.zeros(2, 3, preprocessing.size, preprocessing.size)
        # An index that keeps tower features gets them from the same graph, so that indexing runs
        # through the export too (indexer.models.deferred) and queries simply ignore them.
        outputs = ("vectors", "features") if model.keeps_tower_features else ("vectors",)
        graph = _projected(features, model.head, "project_images", with_features=len(outputs) == 2)
        _export(graph, example, folder / f"{key}.onnx", "pixels", {0: "batch"}, outputs)
        described = {
            "size": preprocessing.size,
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
            "interpolation": preprocessing.interpolation,
            "resize_mode": preprocessing.resize_mode,
        }
        description = {"kind": "image", "spec": spec, "onnx": f"{key}.onnx", "input": "pixels", "outputs": outputs}
        _write_sidecar(sidecar, {**description, "preprocess": described})
    except Exception:  # an optimisation only
        return None
    return sidecar


# The names the offline default's exports had before they covered every model.
export_query_encoder = export_text_encoder
export_image_query_encoder = export_image_encoder


def prepare_query_encoders(model: EmbeddingModel, on_progress: StageProgress | None = None) -> dict[str, Path | None]:
    """Export both paths when they are missing, reporting each as a one-step stage."""
    done: dict[str, Path | None] = {}
    for kind, export in (("text", export_text_encoder), ("image", export_image_encoder)):
        stage = f"exporting the {kind} query encoder"
        fresh = not sidecar_path(str(model.spec), kind).is_file()  # type: ignore[arg-type]
        if fresh and on_progress:
            on_progress(stage, 0, 1)
        done[kind] = export(model)
        if fresh and on_progress:
            on_progress(stage, 1, 1)
    return done


# --- query side (no torch) -----------------------------------------------------------------------


def _session(onnx_file: Path, threads: int | None, device: str) -> Any:
    import onnxruntime

    from xmodal.indexer.accelerators import onnx_providers

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # No memory arena: it grows to the largest batch a session ever ran (64 texts of 256 tokens left
    # +790 MB held by a server) and never shrinks; freeing after each run costs little per query.
    options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
        # No spin-waiting between batches: decode workers need those cycles while indexing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(onnx_file), options, providers=onnx_providers(device))


class _ExportedEncoder:
    """An exported path run by onnxruntime; `for_index` finds the export for an index's model."""

    kind: Kind = "text"

    def __init__(self, sidecar: Path, threads: int | None = None, device: str = "auto") -> None:
        self.description: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        if self.description.get("format") != _FORMAT or self.description.get("kind") != self.kind:
            raise ValueError(f"{sidecar} is not a {self.kind} query encoder of format {_FORMAT}")
        self._folder = sidecar.parent
        self._input = str(self.description["input"])
        self._session = _session(self._folder / self.description["onnx"], threads, device)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs this encoder on."""
        return list(self._session.get_providers())

    @classmethod
    def for_index(cls, spec: str | None, threads: int | None = None, device: str = "auto") -> Self | None:
        """The exported encoder for an index's model spec, or None when there is none (yet)."""
        if not spec:
            return None
        try:
            sidecar = sidecar_path(spec, cls.kind)
            return cls(sidecar, threads, device) if sidecar.is_file() else None
        except Exception:  # a broken cache entry or an unparsable spec: the full model answers
            return None

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: array})[0].astype(np.float32, copy=False)


class QueryTextEncoder(_ExportedEncoder):
    """Embeds query texts with onnxruntime; rows float32 and L2-normalised like the model's."""

    kind: Kind = "text"

    def __init__(self, sidecar: Path, threads: int | None = None, device: str = "auto") -> None:
        super().__init__(sidecar, threads, device)
        described = self.description["tokenizer"]
        file = self._folder / described["file"]
        if described["type"] == "clip-bpe":
            from xmodal.indexer.models.clip_tokenizer import ClipBpeTokenizer

            self._tokenize: Callable[[list[str]], np.ndarray] = ClipBpeTokenizer(
                file, described["context_length"], described["clean"]
            )
        else:
            from xmodal.indexer.models.wordpiece import WordPieceTokenizer

            self._tokenize = WordPieceTokenizer(file, int(described["max_tokens"]), int(described["pad_id"]))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """As the model's own embed_texts: Chinese texts through the Chinese path, with the
        correction when the exported model's text space is the one it was fitted in."""
        from xmodal.indexer.models.chinese.script import has_chinese

        texts = list(texts)
        if not any(has_chinese(t) for t in texts):
            return self._run(self._tokenize(texts))
        from xmodal.indexer.models.chinese import corrected_for, embed_by_language

        tower = lambda some: self._run(self._tokenize(some))  # noqa: E731
        return embed_by_language(texts, tower, corrected_for(str(self.description.get("spec", ""))))


class QueryImageEncoder(_ExportedEncoder):
    """Embeds images with onnxruntime and Pillow: the model's own preprocessing (its
    `Preprocessing`, stored in the sidecar), without torchvision."""

    kind: Kind = "image"

    def __init__(self, sidecar: Path, threads: int | None = None, device: str = "auto") -> None:
        from xmodal.indexer.models.preprocess import Preprocessing

        super().__init__(sidecar, threads, device)
        d = self.description["preprocess"]
        # exports made before resize modes were described all resized the short side
        mode = d.get("resize_mode", "shortest")
        self.preprocessing = Preprocessing(int(d["size"]), tuple(d["mean"]), tuple(d["std"]), d["interpolation"], mode)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self._run(np.stack([self.preprocessing.pixels(im) for im in images]))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Already preprocessed (n, 3, H, W) float32 pixels, as the indexing run has them."""
        return self._run(np.ascontiguousarray(pixels, dtype=np.float32))

    @property
    def gives_tower_features(self) -> bool:
        return "features" in self.description.get("outputs", ())

    def embed_pixels_for_index(self, pixels: np.ndarray) -> IndexedPixels:
        """Vectors and, when the export has them, the tower features (float16) an index keeps."""
        from xmodal.indexer.models.embedding import IndexedPixels

        array = np.ascontiguousarray(pixels, dtype=np.float32)
        if not self.gives_tower_features:
            return IndexedPixels(self._run(array), None)
        vectors, features = self._session.run(None, {self._input: array})[:2]
        return IndexedPixels(vectors.astype(np.float32, copy=False), features.astype(np.float16))
