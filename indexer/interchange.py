"""Embeddings in and out in clip-retrieval's layout, so vectors computed elsewhere (clip-retrieval,
img2dataset + clip inference, another xmodal) can be searched here, and ours used there.

    DIR/img_emb/img_emb_{k}.npy          (n_k, dim) float16 or float32, L2-normalised rows
    DIR/metadata/metadata_{k}.parquet    n_k rows, column `image_path` (row i describes vector i)
    DIR/text_emb/text_emb_{k}.npy        text vectors; their captions in metadata's `caption`

clip-retrieval writes images and their captions side by side (pairs). xmodal's texts are not paired
with its photos, so an export puts them in a second folder of the same layout, DIR/texts/, whose
metadata has `caption` and `source`. Extra metadata columns (size, mtime_ns, width, height,
content_hash, taken_at) carry xmodal's file facts, and `facts_*` columns its facts (when, where,
camera, names: indexer.facts), so an exported index imports to the same rows, with its places and
dates even where the photos themselves are not on the importing machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.facts import Facts, write_facts
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow, TextRow, utcnow, vector_to_blob

__all__ = ["ImportSummary", "ExportSummary", "import_embeddings", "export_embeddings", "NORM_TOLERANCE"]

# float16 storage (clip-retrieval's default) leaves norms within ~1e-3 of 1; anything further off
# was not normalised (or is another model's raw features) and would rank wrongly under inner product.
NORM_TOLERANCE = 1e-2
_WRITE_BATCH = 1000
_SHARD_ROWS = 250_000  # a shard is built in memory: 250k x 512-d float32 is 0.5 GB
_FACTS = ("size", "mtime_ns", "width", "height", "content_hash", "taken_at")
_FACT_FIELDS = tuple(f.name for f in dataclass_fields(Facts))  # the facts table's columns, as `facts_<name>`


@dataclass
class ImportSummary:
    images: int = 0
    texts: int = 0
    replaced: int = 0
    missing_files: int = 0
    shards: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "texts": self.texts,
            "replaced": self.replaced,
            "missing_files": self.missing_files,
            "shards": len(self.shards),
        }


@dataclass
class ExportSummary:
    images: int = 0
    texts: int = 0
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"images": self.images, "texts": self.texts, "files": self.files}


def _pyarrow():  # noqa: ANN202
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InvalidInputError(
            "clip-retrieval files need pyarrow: `pip install 'xmodal[ray]'` (or pyarrow alone)"
        ) from e
    return pa, pq


def _shards(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    """(shard key, file) sorted by the number in the name: img_emb_2 before img_emb_10."""
    found = []
    for path in folder.glob(f"{prefix}*.npy"):
        digits = re.findall(r"\d+", path.stem[len(prefix) :])
        found.append((int(digits[-1]) if digits else -1, path.stem[len(prefix) :].lstrip("_"), path))
    return [(key, path) for _, key, path in sorted(found)]


def _checked_vectors(path: Path, dim: int, rows: int) -> np.ndarray:
    """The shard's vectors as float32 unit rows, or an InvalidInputError saying what is wrong."""
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise InvalidInputError(f"'{path}' is not a readable .npy array: {e}") from e
    if raw.ndim != 2:
        raise InvalidInputError(f"'{path}' holds an array of shape {raw.shape}, not (rows, dim)")
    if raw.shape[1] != dim:
        raise InvalidInputError(
            f"'{path}' has {raw.shape[1]}-d vectors but the model makes {dim}-d ones; wrong --model?"
        )
    if raw.shape[0] != rows:
        raise InvalidInputError(f"'{path}' has {raw.shape[0]} vectors but its metadata has {rows} rows")
    vectors = np.asarray(raw, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise InvalidInputError(f"'{path}' contains NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.ones(0, np.float32)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        raise InvalidInputError(
            f"'{path}': {int(off.sum())} of {len(norms)} vectors are not L2-normalised "
            f"(norms {norms.min():.4g}..{norms.max():.4g}); normalise them first (inner-product search needs unit rows)"
        )
    fix = np.abs(norms - 1.0) > 1e-6  # float16 storage: back to unit rows; exact float32 rows stay bit for bit
    if fix.any():
        vectors = np.array(vectors)
        vectors[fix] /= norms[fix, None]
    return vectors


def _metadata(folder: Path, key: str) -> dict[str, list]:
    _, pq = _pyarrow()
    candidates = [folder / f"metadata_{key}.parquet", folder / f"metadata{key}.parquet"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise InvalidInputError(f"no metadata for shard '{key}': expected '{candidates[0]}'")
    try:
        return pq.read_table(path).to_pydict()
    except Exception as e:
        raise InvalidInputError(f"'{path}' is not a readable parquet file: {e}") from e


def _image_facts(path: str, meta: dict[str, list], row: int, summary: ImportSummary) -> dict[str, object]:
    """Facts for one image row: from the metadata when it carries them, else from the file itself."""
    facts: dict[str, object] = {}
    if all(name in meta for name in _FACTS[:5]):
        facts = {name: meta[name][row] for name in _FACTS[:5]}
        taken = meta.get("taken_at", [None] * (row + 1))[row]
        facts["taken_at"] = (
            taken if isinstance(taken, datetime) or taken is None else datetime.fromisoformat(str(taken))
        )
        return facts
    from xmodal.indexer.indexing import file_hash

    try:
        st = Path(path).stat()
        from PIL import Image

        with Image.open(path) as im:  # the header only: no decode
            width, height = im.size
        return {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "width": width,
            "height": height,
            "content_hash": file_hash(Path(path)),
            "taken_at": None,
        }
    except Exception:
        # not here (embedded on another machine) or unreadable: the row is still searchable; a
        # later `xmodal index` of its folder will see a changed file and embed it again
        summary.missing_files += 1
        return {"size": -1, "mtime_ns": -1, "width": 0, "height": 0, "content_hash": "", "taken_at": None}


def import_embeddings(
    directory: Path | str,
    model_spec: str,
    dim: int,
    index_dir: Path | str | None = None,
    db_url: str | None = None,
    fingerprint: str | None = None,
    image_root: Path | str | None = None,
) -> ImportSummary:
    """Import a clip-retrieval folder made by model `model_spec` (vectors of `dim`) into an index.

    Every shard is checked (dimension, finite, normalised, count against its metadata) before any
    row is written; rows go in one transaction per 1,000. An image path already in the index has
    its vector replaced; a text already there (same source and text) is skipped.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InvalidInputError(f"'{directory}' is not a folder")
    root = Path(image_root).expanduser().absolute() if image_root else Path.cwd()
    plans: list[tuple[str, Path, str, Path]] = []  # (kind, shard file, shard key, metadata folder)
    for base in (directory, directory / "texts"):
        for kind, prefix in (("image", "img_emb"), ("text", "text_emb")):
            folder = base / prefix
            if folder.is_dir():
                plans.extend((kind, path, key, base / "metadata") for key, path in _shards(folder, prefix + "_"))
    if not plans:
        raise InvalidInputError(f"'{directory}' has no img_emb/*.npy or text_emb/*.npy (clip-retrieval layout)")
    # check everything first: a bad shard refuses the import before anything is written
    checked = []
    for kind, path, key, meta_dir in plans:
        meta = _metadata(meta_dir, key)
        column = "image_path" if kind == "image" else "caption"
        if column not in meta:
            raise InvalidInputError(
                f"metadata of shard '{key}' in '{meta_dir}' has no '{column}' column "
                f"(columns: {', '.join(meta) or 'none'})"
            )
        rows = len(meta[column])
        checked.append((kind, path, key, meta, _checked_vectors(path, dim, rows)))

    summary = ImportSummary()
    store = IndexStore.open(index_dir, db_url, create=True)
    try:
        with store.write_lock():
            store.check_model(model_spec, dim, fingerprint)
            for kind, path, _key, meta, vectors in checked:
                summary.shards.append(str(path))
                if kind == "image":
                    _import_images(store, model_spec, meta, vectors, root, summary)
                else:
                    _import_texts(store, model_spec, meta, vectors, str(path), summary)
            store.save_vectors()
    finally:
        store.close()
    return summary


def _import_images(
    store: IndexStore, spec: str, meta: dict[str, list], vectors: np.ndarray, root: Path, summary: ImportSummary
) -> None:
    from sqlalchemy import select

    index = store.vectors("image")
    for start in range(0, len(vectors), _WRITE_BATCH):
        stop = min(len(vectors), start + _WRITE_BATCH)
        paths = [str(p if Path(p).is_absolute() else root / p) for p in meta["image_path"][start:stop]]
        now = utcnow()
        with store.metadata.session() as s, s.begin():
            existing = {row.path: row for row in s.scalars(select(ImageRow).where(ImageRow.path.in_(paths)))}
            rows = []
            for offset, path in enumerate(paths):
                values = dict(
                    _image_facts(path, meta, start + offset, summary),
                    path=path,
                    model=spec,
                    indexed_at=now,
                    vector=vector_to_blob(vectors[start + offset]),
                )
                row = existing.get(path)
                if row is None:
                    row = ImageRow(**values)
                    s.add(row)
                    existing[path] = row
                    summary.images += 1
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
                    summary.replaced += 1
                rows.append(row)
            s.flush()
            ids = np.array([row.id for row in rows], dtype=np.int64)
            write_facts(s, _imported_facts(meta, start, [int(i) for i in ids]))
            store.metadata.bump_generation(s, "image")
        index.add(ids, vectors[start:stop])


def _imported_facts(meta: dict[str, list], start: int, ids: list[int]) -> list[tuple[int, Facts]]:
    """The facts the metadata carries for rows start.. (an xmodal export's `facts_*` columns); rows
    without them get theirs from their files on the next `xmodal index`."""
    if "facts_taken_source" not in meta:
        return []
    columns = {name: meta.get(f"facts_{name}") for name in _FACT_FIELDS}
    found = []
    for offset, image_id in enumerate(ids):
        values: dict[str, Any] = {
            name: None if column is None else column[start + offset] for name, column in columns.items()
        }
        if not values["taken_source"]:
            continue
        if values["taken_at"] is not None and not isinstance(values["taken_at"], datetime):
            values["taken_at"] = datetime.fromisoformat(str(values["taken_at"]))
        values["words"] = values["words"] or ""
        found.append((image_id, Facts(**values)))
    return found


def _import_texts(
    store: IndexStore, spec: str, meta: dict[str, list], vectors: np.ndarray, shard: str, summary: ImportSummary
) -> None:
    from sqlalchemy import select

    from xmodal.indexer.text_indexing import text_hash

    index = store.vectors("text")
    sources = meta.get("source") or [shard] * len(vectors)
    for start in range(0, len(vectors), _WRITE_BATCH):
        stop = min(len(vectors), start + _WRITE_BATCH)
        now = utcnow()
        with store.metadata.session() as s, s.begin():
            batch_sources = set(sources[start:stop])
            known = {
                (row[0], row[1])
                for row in s.execute(
                    select(TextRow.source, TextRow.content_hash).where(TextRow.source.in_(batch_sources))
                )
            }
            rows, picked = [], []
            for offset in range(start, stop):
                text = str(meta["caption"][offset] or "")
                key = (str(sources[offset]), text_hash(text))
                if key in known:
                    continue
                known.add(key)
                rows.append(
                    TextRow(
                        source=key[0],
                        text=text,
                        content_hash=key[1],
                        model=spec,
                        indexed_at=now,
                        vector=vector_to_blob(vectors[offset]),
                    )
                )
                picked.append(offset)
            s.add_all(rows)
            s.flush()
            ids = np.array([row.id for row in rows], dtype=np.int64)
            store.metadata.bump_generation(s, "text")
        index.add(ids, vectors[picked])
        summary.texts += len(rows)


def _chunks(
    store: IndexStore, table: type[ImageRow] | type[TextRow], columns: list[str], size: int
) -> Iterator[Sequence]:
    from sqlalchemy import select

    with store.metadata.session() as s:
        stmt = (
            select(*(getattr(table, c) for c in columns))
            .order_by(table.id)
            .execution_options(yield_per=size, stream_results=True)
        )
        yield from s.execute(stmt).partitions(size)


def _photo_texts(store: IndexStore, ids: list[int]) -> list[str | None]:
    """The text read in each photo of `ids` (ascending: a shard's; a range, not a list of 250k
    parameters, which SQLite and PostgreSQL refuse)."""
    from sqlalchemy import select

    from xmodal.indexer.store.schema import PhotoTextRow

    with store.metadata.session() as s:
        found = dict(
            s.execute(
                select(PhotoTextRow.item_id, PhotoTextRow.text).where(
                    PhotoTextRow.item_id.between(ids[0], ids[-1]), PhotoTextRow.frame_time.is_(None)
                )
            ).all()
        )
    return [found.get(i) for i in ids]


def _exported_facts(store: IndexStore, ids: list[int]) -> dict[str, list[object]]:
    """`facts_<name>` columns for the photos `ids` (ascending), None where a photo has no facts yet."""
    from sqlalchemy import select

    from xmodal.indexer.store.schema import FactsRow

    columns = [getattr(FactsRow, name) for name in _FACT_FIELDS]
    stmt = select(FactsRow.image_id, *columns).where(FactsRow.image_id.between(ids[0], ids[-1]))
    with store.metadata.session() as s:
        rows = {int(row[0]): row[1:] for row in s.execute(stmt)}
    empty = (None,) * len(_FACT_FIELDS)
    values = [rows.get(i, empty) for i in ids]
    return {f"facts_{name}": [row[k] for row in values] for k, name in enumerate(_FACT_FIELDS)}


def export_embeddings(
    directory: Path | str,
    index_dir: Path | str | None = None,
    db_url: str | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    shard_rows: int = _SHARD_ROWS,
) -> ExportSummary:
    """Write the index's vectors and metadata in clip-retrieval's layout, streamed shard by shard
    (memory: one shard). float32 keeps the vectors exact; float16 halves the files as clip-retrieval does."""
    pa, pq = _pyarrow()
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary()
    store = IndexStore.open(index_dir, db_url)
    try:
        spec, dim = store.model_spec, store.dim
        kinds = (
            ("image", ImageRow, directory, "img_emb", ["vector", "path", *_FACTS, "id"]),
            ("text", TextRow, directory / "texts", "text_emb", ["vector", "text", "source"]),
        )
        for kind, table, base, prefix, columns in kinds:
            for shard, part in enumerate(_chunks(store, table, columns, shard_rows)):
                (base / prefix).mkdir(parents=True, exist_ok=True)
                (base / "metadata").mkdir(parents=True, exist_ok=True)
                vectors = np.frombuffer(b"".join(row[0] for row in part), dtype="<f4").reshape(len(part), -1)
                npy = base / prefix / f"{prefix}_{shard}.npy"
                np.save(npy, vectors.astype(dtype))
                names = ["image_path", *_FACTS] if kind == "image" else ["caption", "source"]
                columns_out = {name: [row[i + 1] for row in part] for i, name in enumerate(names)}
                if kind == "image":  # the text read in each photo (None: not read), and its facts
                    ids = [int(row[-1]) for row in part]
                    columns_out["photo_text"] = _photo_texts(store, ids)
                    columns_out.update(_exported_facts(store, ids))
                table_out = pa.table(columns_out)
                parquet = base / "metadata" / f"metadata_{shard}.parquet"
                pq.write_table(table_out, parquet)
                summary.files += [str(npy), str(parquet)]
                if kind == "image":
                    summary.images += len(part)
                else:
                    summary.texts += len(part)
        info = {
            "model": spec,
            "dim": dim,
            "normalized": True,
            "dtype": dtype,
            "images": summary.images,
            "texts": summary.texts,
            "written_by": "xmodal",
        }
        (directory / "xmodal.json").write_text(json.dumps(info, indent=2))
    finally:
        store.close()
    return summary
