"""Indexing on a Ray cluster: decode in Ray tasks, embed in a pool of model actors, write on the driver.

The driver scans (or reads a listing), compares with the store and follows moves exactly as a
local run does, so unchanged and moved files never reach the cluster. Only the files to embed
become a Ray Data dataset:

    paths --map_batches(_decode_batch, tasks)--> pixels --map_batches(_Embedder, actors)--> vectors

and the vectors stream back to the driver block by block (one block = one model batch), where each
block goes through the local pipeline's writer: one SQL transaction per batch, so a killed driver
loses at most the batches in flight and the same command resumes.

Videos take the same road with one task per video: the task samples it with the local run's own
function (`video_decoders._sample_into`: the same frames, times and preprocessing) and yields a row per
frame and an end row; the same model actors embed the frames, and the driver writes each video in
one transaction once all its frames are back (`Indexer._write_video`).

Decoding reuses the local pipeline's `decode_pool.prepare` (draft-mode JPEG, EXIF orientation, the same
hostile-file handling and failure reasons). Paths must be visible on every node (shared storage).
Ray Data's defaults do the fault handling: a decode task whose worker died is retried, a model
actor that died is restarted and its calls retried (both without limit); the run's result is the
same, since a batch is only written once the driver holds its vectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.indexer.errors import ClusterError, XmodalError

if TYPE_CHECKING:
    from xmodal.indexer.decode_pool import Work
    from xmodal.indexer.indexing import EmbeddedBatch, Indexer, IndexSummary
    from xmodal.indexer.models.embedding import EmbeddingModel
    from xmodal.indexer.store.index_store import IndexStore

__all__ = ["RayOptions", "embed_on_ray", "embed_videos_on_ray", "cluster_resources"]


# A decode worker measured ~500-570 MB (torch, PIL, one photo); 120 MP decoded as RGB alone is
# 360 MB (draft mode keeps JPEGs far below, other formats may not shrink).
_DECODE_MEMORY = 1024**3


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run on Ray.

    address: None starts a local cluster in this process (num_cpus CPUs, default all), "auto" joins
    the cluster started by `ray start` on this machine, "ray://HOST:10001" a remote one through Ray
    Client, "HOST:6379" a cluster's GCS. An already initialised Ray (ray.init by the caller) is used
    as it is. actors: model actors (default: one per GPU, else one per two CPUs); gpus_per_actor:
    default 1 where the cluster has GPUs (the model then runs in fp16), else 0; cpus_per_actor: CPUs
    reserved by (and torch threads of) each actor. log_level: Ray's logging level, given to ray.init
    when this run starts Ray.
    """

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    decode_batch: int = 16
    log_level: int | None = None  # Ray's own logging level (its default when None); the CLI passes ERROR


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part we need
    except ImportError as e:
        raise ClusterError("Ray is not installed; install it with `pip install 'xmodal[ray]'`") from e
    return ray


@contextmanager
def _connected(options: RayOptions) -> Iterator[Any]:
    """Ray, initialised for the run; shut down afterwards only when this run started it."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if options.log_level is not None:
            kwargs["logging_level"] = options.log_level
        if options.address is None:
            kwargs["num_cpus"] = options.num_cpus
        try:
            ray.init(address=options.address, **kwargs)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError, depending on the address
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClusterError(f"cannot connect to the Ray cluster at '{options.address}': {reason}") from e
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cluster_resources(ray: Any) -> tuple[float, float]:
    """(CPUs, GPUs) of the cluster as Ray counts them."""
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))


# --- the decode tasks ---------------------------------------------------------------------------------
def _decode_batch(batch: dict[str, np.ndarray], transform: Callable, target: int, max_pixels: int) -> dict[str, Any]:
    """Decode, hash and preprocess each file of the batch with the local pipeline's own function."""
    from pathlib import Path

    from xmodal.indexer import decode_pool
    from xmodal.indexer.scanning import FoundFile

    decode_pool.init_worker(transform, target, max_pixels)
    out: dict[str, list[Any]] = {
        k: [] for k in ("i", "error", "width", "height", "taken_at", "content_hash", "pixels", "shape", "dtype")
    }
    for i, path, size, mtime_ns, digest in zip(
        batch["i"], batch["path"], batch["size"], batch["mtime_ns"], batch["content_hash"]
    ):
        found = FoundFile(Path(os.fsdecode(bytes(path))), int(size), int(mtime_ns))
        prepared = decode_pool.prepare(decode_pool.Work(found, None, str(digest) or None))
        pixels = prepared.pixels
        if pixels is not None and not isinstance(pixels, np.ndarray):
            pixels = pixels.numpy()  # a finished tensor (a model whose transform does not split)
        out["i"].append(int(i))
        out["error"].append(prepared.error or "")
        out["width"].append(prepared.width)
        out["height"].append(prepared.height)
        taken = prepared.taken_at
        out["taken_at"].append(taken.isoformat() if isinstance(taken, datetime) else "")
        out["content_hash"].append(prepared.work.content_hash or "")
        out["pixels"].append(np.ascontiguousarray(pixels).tobytes() if pixels is not None else b"")
        out["shape"].append(",".join(map(str, pixels.shape)) if pixels is not None else "")
        out["dtype"].append(str(pixels.dtype) if pixels is not None else "")
    return {k: np.array(v, dtype=object) if k in ("pixels",) else np.array(v) for k, v in out.items()}


# --- the video tasks ----------------------------------------------------------------------------------
# A video becomes rows: one per sampled frame (kind "frame": its time and pixels), then one "end" row
# (its facts, or the reason it has no frames, and how many frames it sent).
_VIDEO_COLUMNS = ("kind", "time", "frames", "complete")


def _sample_videos(batch: dict[str, np.ndarray], transform: Callable, target: int, limits: Any) -> dict[str, Any]:  # noqa: ANN401
    """Sample each video of the batch with the local run's own function (indexer.video_decoders)."""
    from pathlib import Path

    from xmodal.indexer import decode_pool
    from xmodal.indexer.scanning import FoundFile
    from xmodal.indexer.video_decoders import _sample_into

    decode_pool.init_worker(transform, target, limits.max_pixels, limits)
    names = ("i", "error", "width", "height", "taken_at", "content_hash", "pixels", "shape", "dtype", *_VIDEO_COLUMNS)
    out: dict[str, list[Any]] = {k: [] for k in names}

    def row(i: int, kind: str, **values: Any) -> None:  # noqa: ANN401
        defaults = {"error": "", "width": 0, "height": 0, "taken_at": "", "content_hash": "", "pixels": b""}
        defaults.update({"shape": "", "dtype": "", "time": 0.0, "frames": 0, "complete": True})
        for k, v in {"i": i, "kind": kind, **defaults, **values}.items():
            out[k].append(v)

    for i, path, size, mtime_ns, digest in zip(
        batch["i"], batch["path"], batch["size"], batch["mtime_ns"], batch["content_hash"]
    ):
        found = FoundFile(Path(os.fsdecode(bytes(path))), int(size), int(mtime_ns), "video")
        messages: list[tuple] = []
        _sample_into(messages.append, decode_pool.Work(found, None, str(digest) or None), transform, target, limits)
        sent = 0
        for message in messages:
            if message[0] == "frame":
                pixels = message[2] if isinstance(message[2], np.ndarray) else message[2].numpy()
                shape, dtype = ",".join(map(str, pixels.shape)), str(pixels.dtype)
                row(
                    int(i),
                    "frame",
                    time=float(message[1]),
                    pixels=np.ascontiguousarray(pixels).tobytes(),
                    shape=shape,
                    dtype=dtype,
                )
                sent += 1
                continue
            done = message[1]
            taken = done.taken_at
            row(
                int(i),
                "end",
                error=done.error or ("" if sent else "no frame decoded"),
                width=done.width,
                height=done.height,
                taken_at=taken.isoformat() if isinstance(taken, datetime) else "",
                content_hash=done.content_hash or "",
                frames=sent,
                complete=bool(done.complete),
            )
    return {k: np.array(v, dtype=object) if k == "pixels" else np.array(v) for k, v in out.items()}


# --- the model actors ---------------------------------------------------------------------------------
class _Embedder:
    """One model per actor, loaded once; embeds the decoded rows of each batch it is handed."""

    def __init__(self, model: EmbeddingModel | str, use_gpu: bool, threads: int) -> None:
        from xmodal.indexer.accelerators import Device, resolve_device

        if isinstance(model, str):
            from xmodal.indexer.models.deferred import load_for_indexing
            from xmodal.indexer.preparation import with_exported_image_path

            # on a GPU, load_model runs the model in fp16 (features come back as fp32); on a CPU the
            # image path runs in onnxruntime, as in the local pipeline (without loading the
            # PyTorch model, or importing torch, when this machine's cache has the export)
            device: Device = "cuda" if use_gpu and resolve_device("auto") == "cuda" else "cpu"
            model = with_exported_image_path(load_for_indexing(model, device=device))
        if not model.uses_exported_image_path:
            import torch

            torch.set_num_threads(max(1, threads))
        self.model = model
        self.split = model.pixel_split()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        # a video's end row has no error and no pixels: it passes through, as failed rows do
        good = [j for j, error in enumerate(batch["error"]) if not error and len(batch["pixels"][j])]
        out: dict[str, Any] = {k: batch[k] for k in ("i", "error", "width", "height", "taken_at", "content_hash")}
        out.update({k: batch[k] for k in _VIDEO_COLUMNS if k in batch})
        vectors = [b""] * len(batch["i"])
        extras: dict[str, list[bytes]] = {}
        if good:
            items: list[Any] = [
                np.frombuffer(batch["pixels"][j], dtype=str(batch["dtype"][j])).reshape(
                    tuple(int(x) for x in str(batch["shape"][j]).split(","))
                )
                for j in good
            ]
            if not self.split.splits:  # finished tensors, as the decode tasks made them
                import torch

                items = [torch.from_numpy(a.copy()) for a in items]
            pixels = self.split.per_batch(items)
            embedded = self.model.embed_pixels_for_index(pixels)
            for position, j in enumerate(good):
                vectors[j] = np.ascontiguousarray(embedded.vectors[position], dtype="<f4").tobytes()
            # whatever else the model gives for the second stage (tower features, ...) travels as float16
            for name in embedded._fields[1:]:
                value = getattr(embedded, name)
                if value is None:
                    continue
                column = extras.setdefault(name, [b""] * len(batch["i"]))
                for position, j in enumerate(good):
                    part = np.ascontiguousarray(value[position], dtype="<f2")
                    column[j] = (
                        np.int32(part.ndim).tobytes() + np.asarray(part.shape, dtype="<i4").tobytes() + part.tobytes()
                    )
        out["vector"] = np.array(vectors, dtype=object)
        for name, column in extras.items():
            out[f"x_{name}"] = np.array(column, dtype=object)
        return out


def _unpack_half(blob: bytes) -> np.ndarray:
    ndim = int(np.frombuffer(blob[:4], dtype="<i4")[0])
    shape = tuple(int(x) for x in np.frombuffer(blob[4 : 4 + 4 * ndim], dtype="<i4"))
    return np.frombuffer(blob[4 + 4 * ndim :], dtype="<f2").reshape(shape)


# --- the driver ---------------------------------------------------------------------------------------
def _plan_actors(options: RayOptions, cpus: float, gpus: float) -> tuple[int, float]:
    gpus_per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    if options.actors is not None:
        return max(1, options.actors), gpus_per_actor
    if gpus_per_actor > 0:
        return max(1, int(gpus // gpus_per_actor)), gpus_per_actor
    # CPU only: half the CPUs run models, the other half decode for them
    return max(1, int(cpus // (2 * max(options.cpus_per_actor, 1.0)))), 0.0


def _work_items(work: list[Work]) -> list[dict[str, Any]]:
    """The rows Ray Data reads the files from: the file's place in `work` and what names its version."""
    return [
        {
            "i": k,
            "path": os.fsencode(w.found.path),
            "size": w.found.size,
            "mtime_ns": w.found.mtime_ns,
            "content_hash": w.content_hash or "",
        }
        for k, w in enumerate(work)
    ]


def _embedded(
    ray: Any,  # noqa: ANN401 - the ray module
    ds: Any,  # noqa: ANN401 - a ray.data.Dataset of decoded pixels
    batch_size: int,
    model: EmbeddingModel,
    ship_spec: bool,
    options: RayOptions,
    actors: int,
    gpus_per_actor: float,
) -> Any:  # noqa: ANN401
    """`ds` embedded by a pool of model actors (each loads the model once)."""
    return ds.map_batches(
        _Embedder,
        batch_size=batch_size,
        fn_constructor_kwargs={
            "model": str(model.spec) if ship_spec else model,
            "use_gpu": gpus_per_actor > 0,
            "threads": int(max(1, options.cpus_per_actor)),
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=gpus_per_actor,
    )


def embed_on_ray(
    indexer: Indexer,
    store: IndexStore,
    model: EmbeddingModel,
    work: list[Work],
    summary: IndexSummary,
    options: RayOptions,
    ship_spec: bool = True,
) -> None:
    """Embed `work` on the cluster and write each returned batch through the indexer's writer.

    model: the driver's copy (its preprocessing runs in the decode tasks). ship_spec: each actor
    loads the model from its spec on its own device (fp16 on a GPU); otherwise the driver's model
    object itself is shipped (tests, custom models that have no spec to load from).
    """
    from xmodal.indexer.decode_pool import decode_size
    from xmodal.indexer.models.embedding import IndexedPixels

    preprocessing = getattr(model, "preprocessing", None)
    target = preprocessing.size if preprocessing is not None else decode_size(model.image_transform)
    # uint8 pixels either way, which an actor's own split (torch on a GPU) takes as well
    per_image = model.pixel_split().per_image
    total = len(work)
    written = [0]  # files of the batches the write loop has committed (for the error message)
    timings = {"cluster": 0.0}
    with _connected(options) as ray:
        cpus, gpus = cluster_resources(ray)
        actors, gpus_per_actor = _plan_actors(options, cpus, gpus)
        summary.timings["cluster_cpus"], summary.timings["cluster_gpus"] = cpus, gpus
        items = _work_items(work)
        context = ray.data.DataContext.get_current()
        saved = context.enable_progress_bars
        context.enable_progress_bars = False  # the library prints nothing; the caller has on_progress
        try:
            ds = ray.data.from_items(
                items,
                override_num_blocks=max(
                    1, min(len(items), (len(items) + options.decode_batch - 1) // options.decode_batch)
                ),
            )
            ds = ds.map_batches(
                _decode_batch,
                batch_size=options.decode_batch,
                fn_kwargs={"transform": per_image, "target": target, "max_pixels": indexer.limits.max_pixels},
                num_cpus=1,
                # a decoder holds one photo of up to MAX_PIXELS; the reservation also keeps Ray Data
                # from fusing decoding into the model actors (equal resource requests would)
                memory=_DECODE_MEMORY,
            )
            ds = _embedded(ray, ds, indexer.batch_size, model, ship_spec, options, actors, gpus_per_actor)

            def embedded_batches() -> Iterator[EmbeddedBatch]:
                """The cluster's source of embedded batches, in the order Ray returns them."""
                clock = started = time.perf_counter()
                for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                    timings["cluster"] += time.perf_counter() - clock
                    # until the first batch: workers start, import torch, actors load the model
                    timings.setdefault("first_batch", time.perf_counter() - started)
                    batch = _to_prepared(block, work, IndexedPixels)
                    yield batch
                    written[0] += len(batch[0])  # resumed: the write loop committed it
                    clock = time.perf_counter()

            indexer.write_loop(store, model, embedded_batches(), total, summary)
        except XmodalError:
            raise
        except Exception as e:
            if not type(e).__module__.startswith("ray"):
                raise
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClusterError(
                f"the Ray run failed ({written[0]} of {total} files written, run the same command to resume): {reason}"
            ) from e
        finally:
            context.enable_progress_bars = saved
    summary.timings.update(timings)


def _to_prepared(block: dict[str, np.ndarray], work: list[Work], indexed: Any) -> tuple[list, list, Any]:
    """The local pipeline's Prepared rows and IndexedPixels (`indexed`, the NamedTuple class) for
    one returned block."""
    from xmodal.indexer.decode_pool import Prepared

    batch, good, vectors = [], [], []
    extras: dict[str, list[np.ndarray]] = {name[2:]: [] for name in block if name.startswith("x_")}
    for j, i in enumerate(block["i"]):
        item = work[int(i)]
        if block["content_hash"][j]:
            item.content_hash = str(block["content_hash"][j])
        taken = str(block["taken_at"][j])
        prepared = Prepared(
            item,
            width=int(block["width"][j]),
            height=int(block["height"][j]),
            taken_at=datetime.fromisoformat(taken) if taken else None,
            error=str(block["error"][j]) or None,
        )
        batch.append(prepared)
        if prepared.error is None:
            good.append(prepared)
            vectors.append(np.frombuffer(block["vector"][j], dtype="<f4"))
            for name in extras:
                extras[name].append(_unpack_half(block[f"x_{name}"][j]))
    if not good:
        return batch, good, None
    fields: dict[str, np.ndarray | None] = {name: None for name in indexed._fields}
    fields["vectors"] = np.stack(vectors).astype(np.float32)
    for name, parts in extras.items():
        if name in fields:
            fields[name] = np.stack(parts)
    return batch, good, indexed(**fields)


def embed_videos_on_ray(
    indexer: Indexer,
    store: IndexStore,
    model: EmbeddingModel,
    videos: list[Work],
    summary: IndexSummary,
    options: RayOptions,
    ship_spec: bool = True,
) -> None:
    """Sample `videos` in Ray tasks (one video a task), embed their frames in the model actors, and
    write each video once all its frames are back, through the local run's writer (one transaction
    a video, in the order they finish). The sampler's own time budget bounds a task; a decoder stuck
    inside FFmpeg is not killed here (Ray retries a task whose worker died)."""
    from xmodal.indexer.decode_pool import PreparedVideo, decode_size
    from xmodal.indexer.models.embedding import IndexedPixels
    from xmodal.indexer.progress import Progress

    preprocessing = getattr(model, "preprocessing", None)
    target = preprocessing.size if preprocessing is not None else decode_size(model.image_transform)
    per_image = model.pixel_split().per_image
    total, written = len(videos), [0]
    if indexer.on_progress:
        indexer.on_progress(Progress(0, total, "videos"))
    with _connected(options) as ray:
        cpus, gpus = cluster_resources(ray)
        actors, gpus_per_actor = _plan_actors(options, cpus, gpus)
        items = _work_items(videos)
        context = ray.data.DataContext.get_current()
        saved = context.enable_progress_bars
        context.enable_progress_bars = False
        try:
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                _sample_videos,
                batch_size=1,
                fn_kwargs={"transform": per_image, "target": target, "limits": indexer.limits},
                num_cpus=1,
                memory=_DECODE_MEMORY,
            )
            ds = _embedded(ray, ds, indexer.batch_size, model, ship_spec, options, actors, gpus_per_actor)
            clock = time.perf_counter()
            frames: dict[int, list[tuple[float, np.ndarray, dict[str, np.ndarray]]]] = {}
            ends: dict[int, dict[str, Any]] = {}
            for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                extras = [name for name in block if name.startswith("x_")]
                for j, i in enumerate(int(x) for x in block["i"]):
                    if str(block["kind"][j]) == "frame":
                        parts = {name[2:]: _unpack_half(block[name][j]) for name in extras}
                        vector = np.frombuffer(block["vector"][j], dtype="<f4")
                        frames.setdefault(i, []).append((float(block["time"][j]), vector, parts))
                    else:
                        ends[i] = {k: block[k][j] for k in ("error", "width", "height", "taken_at", "content_hash")}
                        ends[i]["frames"] = int(block["frames"][j])
                        ends[i]["complete"] = bool(block["complete"][j])
                    end = ends.get(i)
                    if end is None or len(frames.get(i, [])) != end["frames"]:
                        continue
                    got = sorted(frames.pop(i, []), key=lambda f: f[0])
                    del ends[i]
                    work = videos[i]
                    if end["content_hash"]:
                        work.content_hash = str(end["content_hash"])
                    taken = str(end["taken_at"])
                    video = PreparedVideo(
                        work,
                        times=[t for t, _, _ in got],
                        width=int(end["width"]),
                        height=int(end["height"]),
                        taken_at=datetime.fromisoformat(taken) if taken else None,
                        complete=end["complete"],
                        error=str(end["error"]) or None,
                    )
                    embedded = None
                    if got and video.error is None:
                        fields: dict[str, np.ndarray | None] = {name: None for name in IndexedPixels._fields}
                        fields["vectors"] = np.stack([v for _, v, _ in got]).astype(np.float32)
                        for name in got[0][2]:
                            if name in fields:
                                fields[name] = np.stack([p[name] for _, _, p in got])
                        embedded = IndexedPixels(**fields)  # type: ignore[arg-type]
                    indexer._write_video(store, model, video, embedded, summary)
                    written[0] += 1
                    if indexer.on_progress:
                        indexer.on_progress(Progress(written[0], total, "videos"))
            summary.timings["video_cluster"] = time.perf_counter() - clock  # sampling, embedding and writing
        except XmodalError:
            raise
        except Exception as e:
            if not type(e).__module__.startswith("ray"):
                raise
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClusterError(
                f"the Ray run failed ({written[0]} of {total} videos written, run the same command to resume): {reason}"
            ) from e
        finally:
            context.enable_progress_bars = saved
