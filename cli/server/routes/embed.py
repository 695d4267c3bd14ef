"""Vectors for pipelines in any language: the same embeddings the library gives Python."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, UploadFile

from xmodal.cli.server.models import EmbedResponse, EmbedTextsRequest
from xmodal.cli.server.params import clean_texts
from xmodal.cli.server.pictures import QUERY_SIZE, Upload, read_uploads
from xmodal.cli.server.services import Services, get_services

__all__ = ["router"]

router = APIRouter(prefix="/api/embed", tags=["embed"])
ServicesDep = Annotated[Services, Depends(get_services)]


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
def embed_texts(services: ServicesDep, request: EmbedTextsRequest) -> EmbedResponse:
    limits = services.settings.limits
    cleaned = clean_texts(request.texts, "texts", limits)
    _require_model(services)
    step = max(1, limits.texts_per_model_call)
    parts = []
    for start in range(0, len(cleaned), step):  # a few at a time: the model's memory grows with the batch
        with services.searching() as engine:
            parts.append(np.asarray(engine.embed_texts(cleaned[start : start + step])))
    return _response(services, np.concatenate(parts))


@router.post("/images", response_model=EmbedResponse, summary="Picture vectors (multipart field 'images', repeatable)")
def embed_images(
    services: ServicesDep, images: Annotated[list[UploadFile], File(description="Pictures.")]
) -> EmbedResponse:
    limits = services.settings.limits
    if len(images) > limits.max_images_per_request:
        raise HTTPException(422, f"images: at most {limits.max_images_per_request} in one request (got {len(images)})")
    uploads = [Upload(f"images[{i}]", upload.file.read()) for i, upload in enumerate(images)]
    _require_model(services)
    vectors = []
    for picture in read_uploads(uploads, limits, services.decoder, QUERY_SIZE):
        with services.searching() as engine:
            vectors.append(engine.embed_image_query(picture))
    return _response(services, np.stack(vectors))
