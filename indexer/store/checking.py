"""Verifying an index, and mending it: SQL rows against the FAISS caches, files, model, leftovers.

SQL is the source of truth (every row carries its full-precision vector); a FAISS file is a cache
stamped with the SQL generation it reflects. A cache whose stamp differs from SQL's generation is
*stale*: every open catches it up from SQL (or rebuilds it), so a stale (or missing) cache is
reported but is not a problem. A cache whose stamp matches SQL is the one searches would use, so
its contents are compared with SQL: every row exactly one vector (same id, same values), no vector without a row.

What `repair=True` does, under the index's write lock (so never while an index run writes):

* rows whose vector cannot be used (wrong length, not finite, another model than the index's)
  are deleted: the next `xmodal index` over their folder embeds those files again;
* rows whose files are gone are kept and reported (a drive not mounted right now looks exactly
  like deleted photos); only `prune_missing=True` deletes them;
* an index without a recorded model gets the one its rows name, when they all agree;
* every FAISS cache is rebuilt from SQL and saved at the current generation;
* temporary files left by a killed save (``*.faiss*.tmp``) are removed.

Library only: no printing; the CLI (`xmodal check`) renders the report.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.indexer.store.vector_index import VectorIndex

__all__ = ["CheckReport", "check_index"]

_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
_KINDS: tuple[Kind, ...] = ("image", "text")
# Stored vectors are L2-normalised; anything further off than this was not written by a model.
_NORM_TOLERANCE = 1e-3
_VALUE_TOLERANCE = 1e-5


@dataclass
class CheckReport:
    """What `check_index` found (after repairing, when asked to repair).

    Problem lists hold row ids (or paths / short descriptions); `ok` is True when all are empty.
    `stale_caches`, `leftover_files` and `notes` are information, not problems: a stale cache is
    rebuilt on open, leftover temporary files are removed by the next writer.
    """

    index: str
    model: str | None = None
    dim: int | None = None
    images: int = 0
    texts: int = 0
    # ids of SQL rows that the current FAISS cache lacks, per kind ("image:12")
    rows_without_vector: list[str] = field(default_factory=list)
    # ids in the current FAISS cache that have no SQL row, per kind ("text:7")
    vectors_without_row: list[str] = field(default_factory=list)
    # ids stored more than once in a FAISS cache, or whose cached vector differs from SQL's
    vector_mismatches: list[str] = field(default_factory=list)
    # FAISS count differs from the SQL count ("image: 10 in SQL, 9 in images.faiss")
    count_mismatches: list[str] = field(default_factory=list)
    # image rows whose file no longer exists
    missing_files: list[str] = field(default_factory=list)
    # model facts: no model recorded while rows exist, rows of another model, bad vectors
    model_problems: list[str] = field(default_factory=list)
    # rows whose stored vector is unusable (wrong length, not finite, not unit length)
    bad_vectors: list[str] = field(default_factory=list)
    # temporary files left by a killed save (information: the next index run or --repair removes
    # them; while a run writes, its own temporary files look the same)
    leftover_files: list[str] = field(default_factory=list)
    stale_caches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    _PROBLEM_FIELDS = (
        "rows_without_vector",
        "vectors_without_row",
        "vector_mismatches",
        "count_mismatches",
        "missing_files",
        "model_problems",
        "bad_vectors",
    )

    @property
    def problems(self) -> dict[str, list[str]]:
        """The non-empty problem lists by category."""
        return {name: getattr(self, name) for name in self._PROBLEM_FIELDS if getattr(self, name)}

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def check_index(
    index_dir: Path | str | None,
    db_url: str | None = None,
    repair: bool = False,
    *,
    model: str | None = None,
    prune_missing: bool = False,
) -> CheckReport:
    """Verify the index at index_dir (default: the default index); mend it when repair is True.

    model: a spec to compare with the index's recorded one (a mismatch is a problem repair cannot
    mend). prune_missing: with repair, delete the rows whose files are gone (never without it).
    Raises IndexNotFoundError when there is no index, IndexLockedError when repairing while
    another run writes.
    """
    store = IndexStore.open(index_dir, db_url)
    try:
        if not repair:
            return _inspect(store, model)
        with store.write_lock():
            before = _inspect(store, model)
            actions = _repair(store, before, prune_missing)
            after = _inspect(store, model)
            after.repaired = actions
            return after
    finally:
        store.close()


# --- inspecting ---------------------------------------------------------------------------------
def _inspect(store: IndexStore, wanted_model: str | None) -> CheckReport:
    meta = store.metadata.get_meta()
    recorded = meta.get("model")
    dim = int(meta["dim"]) if meta.get("dim") else None
    report = CheckReport(index=str(store.directory), model=recorded, dim=dim)

    sql: dict[str, tuple[np.ndarray, list[bytes]]] = {}
    with store.metadata.session() as s:
        for kind, table in _TABLES.items():
            pairs = s.execute(select(table.id, table.vector, table.model).order_by(table.id)).all()
            sql[kind] = (np.array([p[0] for p in pairs], dtype=np.int64), [p[1] for p in pairs])
            models = {p[2] for p in pairs}
            if recorded is None and pairs:
                report.model_problems.append(
                    f"no model recorded, but {len(pairs)} {kind} row(s) exist (models: {', '.join(sorted(models))})"
                )
            elif recorded is not None:
                other = [f"{kind}:{p[0]}" for p in pairs if p[2] != recorded]
                if other:
                    report.model_problems.append(
                        f"{len(other)} {kind} row(s) were embedded by another model than '{recorded}'"
                    )
                    report.bad_vectors.extend(x for x in other if x not in report.bad_vectors)
        image_paths = s.execute(select(ImageRow.id, ImageRow.path)).all()
    report.images, report.texts = len(sql["image"][0]), len(sql["text"][0])
    if wanted_model is not None and recorded is not None and not _same_model(wanted_model, recorded):
        report.model_problems.append(f"index was built with model '{recorded}', not '{wanted_model}'")

    for kind in _KINDS:
        ids, blobs = sql[kind]
        for row_id, blob in zip(ids, blobs):
            reason = _vector_problem(blob, dim)
            if reason and f"{kind}:{row_id}" not in report.bad_vectors:
                report.bad_vectors.append(f"{kind}:{row_id}")
        _compare_cache(store, kind, ids, blobs, dim, meta, report)

    for _row_id, path in image_paths:
        if not os.path.exists(path):
            report.missing_files.append(path)
    report.missing_files.sort()
    if report.missing_files:
        from xmodal.indexer.roots import offline_roots

        report.notes.extend(
            f"root {root} is offline (not there or empty): its rows are kept" for root in offline_roots(store.metadata)
        )

    report.leftover_files = sorted(p.name for p in _leftovers(store.directory))
    return report


def _same_model(wanted: str, recorded: str) -> bool:
    if wanted == recorded:
        return True
    try:
        from xmodal.indexer.models.spec import parse_model_spec

        return str(parse_model_spec(wanted)) == recorded
    except Exception:
        return False


def _vector_problem(blob: bytes | None, dim: int | None) -> str | None:
    if blob is None or dim is None or len(blob) != 4 * dim:
        return "wrong length"
    vec = np.frombuffer(blob, dtype="<f4")
    if not np.all(np.isfinite(vec)):
        return "not finite"
    if abs(float(np.linalg.norm(vec)) - 1.0) > _NORM_TOLERANCE:
        return "not unit length"
    return None


def _compare_cache(
    store: IndexStore,
    kind: Kind,
    ids: np.ndarray,
    blobs: list[bytes],
    dim: int | None,
    meta: dict[str, str],
    report: CheckReport,
) -> None:
    path = store.faiss_path(kind)
    generation = int(meta.get(f"generation:{kind}", "0"))
    if not dim:
        return
    stamp = VectorIndex.read_stamp(path)
    origin = meta.get("database_id")
    if stamp is not None and origin and stamp.get("origin", origin) != origin:
        report.stale_caches.append(f"{path.name}: made from another database; rebuilt from SQL on open")
        return
    loaded = VectorIndex.load(path, dim)
    if loaded is None:
        if path.exists() or len(ids):
            report.stale_caches.append(f"{path.name}: missing or unreadable, rebuilt from SQL on open")
        return
    index, stamped = loaded
    if stamped != generation:
        report.stale_caches.append(
            f"{path.name}: generation {stamped}, SQL is at {generation}; caught up from SQL on open"
        )
        return
    cached_ids, cached_vecs = index.vectors()
    if len(cached_ids) != len(ids):
        report.count_mismatches.append(f"{kind}: {len(ids)} in SQL, {len(cached_ids)} in {path.name}")
    unique, counts = np.unique(cached_ids, return_counts=True)
    report.vector_mismatches.extend(
        f"{kind}:{i} stored {c} times in {path.name}" for i, c in zip(unique, counts) if c > 1
    )
    sql_ids = set(int(i) for i in ids)
    cache_ids = set(int(i) for i in unique)
    report.rows_without_vector.extend(f"{kind}:{i}" for i in sorted(sql_ids - cache_ids))
    report.vectors_without_row.extend(f"{kind}:{i}" for i in sorted(cache_ids - sql_ids))
    by_id = {int(i): v for i, v in zip(cached_ids, cached_vecs)}
    for row_id, blob in zip(ids, blobs):
        cached = by_id.get(int(row_id))
        if cached is None or dim is None or len(blob) != 4 * dim:
            continue
        if not np.allclose(cached, np.frombuffer(blob, dtype="<f4"), atol=_VALUE_TOLERANCE, rtol=0):
            report.vector_mismatches.append(f"{kind}:{row_id} differs between SQL and {path.name}")


def _leftovers(directory: Path) -> list[Path]:
    """Temporary files of an interrupted atomic write of a FAISS cache (or of its stamp)."""
    try:
        return [p for p in directory.glob("*.faiss*.tmp") if p.is_file()]
    except OSError:
        return []


# --- repairing ----------------------------------------------------------------------------------
def _parse_ids(items: list[str], kind: str) -> list[int]:
    out = []
    for item in items:
        prefix, _, rest = item.partition(":")
        if prefix == kind:
            out.append(int(rest.split()[0]))
    return out


def _repair(store: IndexStore, found: CheckReport, prune_missing: bool) -> list[str]:
    actions: list[str] = []
    meta = store.metadata.get_meta()
    if meta.get("model") is None:
        with store.metadata.session() as s:
            models = {m for table in _TABLES.values() for (m,) in s.execute(select(table.model).distinct())}
            lengths = Counter(n for table in _TABLES.values() for (n,) in s.execute(select(func.length(table.vector))))
        if len(models) == 1 and lengths:
            spec = models.pop()
            dim = lengths.most_common(1)[0][0] // 4  # the rows' usual vector length; odd ones go below
            store.metadata.set_meta({"model": spec, "dim": str(dim), "normalized": "true"})
            actions.append(f"recorded model '{spec}' (dim {dim}) from the rows")
            found = _inspect(store, None)  # with a model known, bad vectors can be judged
    drop_images = set(_parse_ids(found.bad_vectors, "image"))
    drop_texts = set(_parse_ids(found.bad_vectors, "text"))
    missing: list[str] = []
    if prune_missing and found.missing_files:
        wanted = set(found.missing_files)
        with store.metadata.session() as s:
            for row_id, path in s.execute(select(ImageRow.id, ImageRow.path)).all():
                if path in wanted and not os.path.exists(path):  # still gone now, under the lock
                    drop_images.add(row_id)
                    missing.append(path)
    if drop_images or drop_texts:
        with store.metadata.session() as s, s.begin():
            store.metadata.delete_ids(ImageRow, sorted(drop_images), s)
            store.metadata.delete_ids(TextRow, sorted(drop_texts), s)
            store.metadata.bump_generation(s, "image")
            store.metadata.bump_generation(s, "text")
        if missing:
            actions.append(f"removed {len(missing)} row(s) whose files are gone")
        unusable = len(drop_images) + len(drop_texts) - len(missing)
        if unusable:
            actions.append(
                f"removed {unusable} row(s) with unusable vectors (they are embedded again by the next index run)"
            )
    if store.dim:
        for kind in _KINDS:
            store.rebuild_vectors(kind)
        store.save_vectors()
        actions.append("rebuilt the FAISS caches from SQL")
    for leftover in _leftovers(store.directory):
        try:
            leftover.unlink()
            actions.append(f"removed leftover file {leftover.name}")
        except OSError:
            pass
    return actions
