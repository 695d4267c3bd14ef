"""Verifying an index, and mending it: SQL rows against the FAISS caches, files, model, leftovers.

SQL is the source of truth (every row carries its full-precision vector); a FAISS file is a cache
stamped with the SQL generation it reflects. A cache whose stamp differs from SQL's generation is
*stale*: every open catches it up from SQL (or rebuilds it), so a stale (or missing) cache is
reported but is not a problem. A cache whose stamp matches SQL is the one searches would use, so
its contents are compared with SQL: every row exactly one vector (same id, same values), no vector without a row.
Those checks of the stored values belong to each per-item signal (indexer.signals: today the
embedding); this module adds what holds for every index: the model (store.model_check), files, leftovers.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from xmodal.indexer.errors import ModelMismatchError
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.model_check import check_model_matches
from xmodal.indexer.store.schema import ImageRow, TextRow

if TYPE_CHECKING:
    from xmodal.indexer.signals import Signal

__all__ = ["CheckReport", "check_index"]

_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}


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
    # the text read in photos (photo_texts): readings of no photo or frame, unreadable or second
    # readings, and the database's text index out of step with the table
    text_problems: list[str] = field(default_factory=list)

    _PROBLEM_FIELDS = (
        "rows_without_vector",
        "vectors_without_row",
        "vector_mismatches",
        "count_mismatches",
        "missing_files",
        "model_problems",
        "bad_vectors",
        "text_problems",
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
    signals: Sequence[Signal] | None = None,
) -> CheckReport:
    """Verify the index at index_dir (default: the default index); mend it when repair is True.

    model: a spec to compare with the index's recorded one (a mismatch is a problem repair cannot
    mend). prune_missing: with repair, delete the rows whose files are gone (never without it).
    signals: the per-item signals to verify (indexer.signals; default: the embedding).
    Raises IndexNotFoundError when there is no index, IndexLockedError when repairing while
    another run writes.
    """
    if signals is None:
        from xmodal.indexer.signals import DEFAULT_SIGNALS

        signals = DEFAULT_SIGNALS
    store = IndexStore.open(index_dir, db_url)
    try:
        if not repair:
            return _inspect(store, model, signals)
        with store.write_lock():
            before = _inspect(store, model, signals)
            actions = _repair(store, before, prune_missing, signals)
            after = _inspect(store, model, signals)
            after.repaired = actions
            return after
    finally:
        store.close()


# --- inspecting ---------------------------------------------------------------------------------
def _inspect(store: IndexStore, wanted_model: str | None, signals: Sequence[Signal]) -> CheckReport:
    meta = store.metadata.get_meta()
    recorded = meta.get("model")
    dim = int(meta["dim"]) if meta.get("dim") else None
    report = CheckReport(index=str(store.directory), model=recorded, dim=dim)
    report.images = store.metadata.count(ImageRow)
    report.texts = store.metadata.count(TextRow)
    if wanted_model is not None:
        try:
            check_model_matches(store, wanted_model)
        except ModelMismatchError as e:
            report.model_problems.append(str(e))
    for signal in signals:
        signal.inspect(store, report)

    with store.metadata.session() as s:
        image_paths = s.execute(select(ImageRow.id, ImageRow.path)).all()
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


def _repair(store: IndexStore, found: CheckReport, prune_missing: bool, signals: Sequence[Signal]) -> list[str]:
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
            found = _inspect(store, None, signals)  # with a model known, bad vectors can be judged
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
    for signal in signals:
        actions.extend(signal.rebuild(store))
    for leftover in _leftovers(store.directory):
        try:
            leftover.unlink()
            actions.append(f"removed leftover file {leftover.name}")
        except OSError:
            pass
    return actions
