"""Vectors for pipelines in any language: the same embeddings the library gives Python."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, UploadFile

from xmodal.cli.server.models import EmbedResponse, EmbedTextsRequest
from xmodal.cli.server.params import MAX_TEXT, clean_text
from xmodal.cli.server.services import Services, get_services
from xmodal.cli.server.uploads import read_upload

__all__ = ["router"]

router = APIRouter(prefix="/api/embed", tags=["embed"])
ServicesDep = Annotated[Services, Depends(get_services)]
MAX_IMAGES = 32


def _response(services: Services, vectors: np.ndarray) -> EmbedResponse:
    engine = services.engine
    return EmbedResponse(
        model=engine.store.model_spec,
        dim=int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        vectors=vectors.astype(float).round(7).tolist(),
    )


def _require_model(services: Services) -> None:
    if not services.engine.store.model_spec:
        raise HTTPException(503, "the index is empty, so it has no model yet; index some photos first")


@router.post("/texts", response_model=EmbedResponse, summary="Text vectors")
def embed_texts(services: Annotated[Services, Depends(get_services)], request: EmbedTextsRequest) -> EmbedResponse:
    limit = services.settings.max_batch
    if len(request.texts) > limit:
        raise HTTPException(422, f"texts: at most {limit} in one request (got {len(request.texts)})")
    cleaned = []
    for i, text in enumerate(request.texts):
        if len(text) > MAX_TEXT:
            raise HTTPException(422, f"texts[{i}]: longer than {MAX_TEXT} characters")
        clean_text(text, f"texts[{i}]")
        words = " ".join(text.split())
        if not words:
            raise HTTPException(400, f"texts[{i}]: the text is empty")
        cleaned.append(words)
    _require_model(services)
    with services.searching() as engine:
        vectors = engine.embed_texts(cleaned)
    return _response(services, np.asarray(vectors))


@router.post("/images", response_model=EmbedResponse, summary="Picture vectors (multipart field 'images', repeatable)")
def embed_images(
    services: ServicesDep, images: Annotated[list[UploadFile], File(description="Pictures.")]
) -> EmbedResponse:
    if len(images) > MAX_IMAGES:
        raise HTTPException(422, f"images: at most {MAX_IMAGES} in one request (got {len(images)})")
    pictures = [read_upload(upload.file.read(), f"images[{i}]") for i, upload in enumerate(images)]
    _require_model(services)
    with services.searching() as engine:
        vectors = np.stack([engine.embed_image_query(p) for p in pictures])
    return _response(services, vectors)
