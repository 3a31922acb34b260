"""Grain input pipeline: evaluation groups -> fixed-shape ``[rows, list]`` ranking batches.

Training stream::

  TrainLists (random access: epoch-shuffled lists; long groups cut into per-epoch chunks)
    -> [process_index::process_count]            (shard after shuffle, as grain recommends)
    -> to_iter_dataset
    -> PackLists  (first-fit-decreasing packing of short lists into rows, with segment ids;
                   checkpointable: its state holds the parent state and the pending lists)
    -> map(Featurize)  (dedupe models/groups of the batch, gather features + embedding rows)

A group longer than ``list_size`` is split each epoch into ``ceil(n / list_size)`` chunks by a
permutation seeded with (seed, epoch, group), so every record is drawn once per epoch and the
draw differs between epochs. Records inside a list stay in corpus order (value desc, model),
which is the stable tie order the listwise loss relies on.

Evaluation batches (``eval_batches``) hold one whole group per row, padded to a power-of-two
bucket, so shapes come from a short fixed list and nothing recompiles after the first pass.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from modellens_jax.data import features, splits
from modellens_jax.data.corpus import Corpus

_EPOCHS = 1 << 20  # the training source repeats this many epochs (effectively forever)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def lists_by_group(
    corpus: Corpus, split: int, setting: int | None = None, min_size: int = 2,
    records: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:  # fmt: skip
    """(group ids, record-index arrays) of the records of ``split`` (and ``setting``; and of
    ``records``, a per-record mask, when given) per group, keeping groups with at least
    ``min_size`` records."""
    keep = np.asarray(corpus["rec_split"]) == split
    if records is not None:
        keep &= np.asarray(records, bool)
    if setting is not None:
        keep &= np.asarray(corpus["rec_setting"]) == setting
    idx = np.flatnonzero(keep)
    g = np.asarray(corpus["rec_group"])[idx]
    bounds = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1, len(idx)]
    groups, lists = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a >= min_size:
            groups.append(int(g[a]))
            lists.append(idx[a:b])
    return np.asarray(groups, np.int64), lists


class TrainLists:
    """Random-access source of training lists (arrays of record indices), epoch-shuffled."""

    def __init__(self, corpus: Corpus, *, list_size: int, seed: int, split: int = splits.TRAIN,
                 records: np.ndarray | None = None):  # fmt: skip
        self.groups, self.lists = lists_by_group(corpus, split, records=records)
        if not self.lists:
            raise ValueError(f"{corpus.dir}: no group has >= 2 records in the training split")
        self.list_size = list_size
        self.seed = seed
        chunks = [math.ceil(len(x) / list_size) for x in self.lists]
        self.item_group = np.repeat(np.arange(len(self.lists)), chunks)
        self.item_chunk = np.concatenate([np.arange(k) for k in chunks])
        self.item_k = np.repeat(chunks, chunks)
        self.per_epoch = len(self.item_group)
        # Grain reads this source from a thread pool: the per-epoch permutation cache is shared
        # state, so it is read into a local under a lock (a reader near an epoch boundary must
        # never see the next epoch's permutation).
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.per_epoch * _EPOCHS

    def __getstate__(self) -> dict[str, Any]:  # picklable for grain worker processes
        d = dict(self.__dict__)
        d["_lock"], d["_perms"] = None, {}
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = _rng(self.seed, 1, epoch).permutation(self.per_epoch)
                self._perms[epoch] = perm
                for old in sorted(self._perms)[:-3]:  # keep the last few epochs
                    del self._perms[old]
            return perm

    def records_per_epoch(self) -> int:
        return int(sum(len(x) for x in self.lists))

    def __getitem__(self, index: int) -> np.ndarray:
        epoch, pos = divmod(int(index), self.per_epoch)
        item = int(self._epoch_perm(epoch)[pos])
        li = int(self.item_group[item])
        recs, k = self.lists[li], int(self.item_k[item])
        if k == 1:
            return recs
        perm = _rng(self.seed, 2, epoch, li).permutation(len(recs))
        return recs[np.sort(perm[int(self.item_chunk[item]) :: k])]


# --- packing ------------------------------------------------------------------------------------
def pack_rows(
    items: list[np.ndarray],
    rows: int,
    list_size: int,
    pack: bool,
    *,
    item_models: list[np.ndarray] | None = None,
    max_models: int = 0,
    max_lists: int = 0,
) -> tuple[list[list[int]], list[int]]:
    """First-fit decreasing of items into ``rows`` bins of ``list_size``; returns per-row item
    indices and the indices left over. Without packing, one item per row. ``max_lists`` bounds
    the lists of a batch and ``max_models`` its distinct models (the batch's group and model
    blocks); items that would exceed a budget wait for the next batch."""
    order = sorted(range(len(items)), key=lambda i: (-len(items[i]), i))
    free = [list_size] * rows
    placed: list[list[int]] = [[] for _ in range(rows)]
    left = []
    seen: set[int] = set()
    n_lists = 0
    for i in order:
        n = len(items[i])
        new: set[int] = set()
        if max_models and item_models is not None:
            new = set(item_models[i].tolist()) - seen
        if (max_lists and n_lists >= max_lists) or (
            max_models and len(seen) + len(new) > max_models
        ):
            left.append(i)
            continue
        for r in range(rows):
            if free[r] >= n and (pack or not placed[r]):
                placed[r].append(i)
                free[r] -= n
                n_lists += 1
                seen |= new
                break
        else:
            left.append(i)
    return placed, sorted(left)


class PackLists(grain.IterDataset):
    """Packs a stream of lists into batches of ``rows`` rows (lists of lists of record indices)."""

    def __init__(self, parent: grain.IterDataset, *, rows: int, list_size: int, pack: bool,
                 pool: int = 0, rec_model: np.ndarray | None = None, max_models: int = 0,
                 max_lists: int = 0, blocks: int = 1):  # fmt: skip
        super().__init__(parent)
        self.rows, self.list_size, self.pack = rows, list_size, pack
        self.pool = pool or (3 * rows if pack else rows)
        # ``blocks``: the batch is packed as that many consecutive blocks of rows // blocks rows,
        # each within the per-block budgets ``max_models`` / ``max_lists`` (Featurize)
        self.rec_model, self.max_models, self.max_lists = rec_model, max_models, max_lists
        self.blocks = blocks

    def __iter__(self) -> _PackIterator:
        return _PackIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"PackLists(rows={self.rows}, list_size={self.list_size}, pack={self.pack})"


class _PackIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, cfg: PackLists):
        super().__init__(parent)
        self.cfg = cfg
        self.pending: list[np.ndarray] = []

    def __next__(self) -> list[list[np.ndarray]]:
        while len(self.pending) < self.cfg.pool:
            self.pending.append(np.asarray(next(self._parent)))
        cfg = self.cfg
        out = []
        for _ in range(cfg.blocks):
            models = None if cfg.rec_model is None else [cfg.rec_model[x] for x in self.pending]
            placed, left = pack_rows(
                self.pending, cfg.rows // cfg.blocks, cfg.list_size, cfg.pack,
                item_models=models, max_models=cfg.max_models, max_lists=cfg.max_lists,
            )  # fmt: skip
            out += [[self.pending[i] for i in row] for row in placed]
            self.pending = [self.pending[i] for i in left]
        return out

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(),
                "pending": [x.tolist() for x in self.pending]}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.pending = [np.asarray(x, np.int64) for x in state["pending"]]


# --- features -----------------------------------------------------------------------------------
@dataclasses.dataclass
class FeatureTables:
    """Host-side per-entity features; embedding tables may be memory-mapped (rows gathered per
    batch, never loaded whole onto a device)."""

    corpus: Corpus
    model_desc: np.ndarray  # [M, Dm] (Dm may be 0 when descriptions are off)
    dataset_desc: np.ndarray  # [D, Dd]
    # per-record competence features [N, F] (NaN = unknown) and their cold-start version,
    # present when the scorer uses them (see attach_competence)
    competence: np.ndarray | None = None
    competence_cold: np.ndarray | None = None

    def __post_init__(self):
        c = self.corpus
        self.rec_model = np.asarray(c["rec_model"])
        self.rec_group = np.asarray(c["rec_group"])
        self.rec_value = np.asarray(c["rec_value"])
        self.rec_z = np.asarray(c["rec_z"])
        self.model_cols = features.corpus_model_rows(c)  # every model input but model_desc
        self.group_dataset = np.asarray(c["group_dataset"])
        self.group_cols = features.context_rows(
            dataset_id=np.asarray(c["dataset_id"])[self.group_dataset],
            task=c["group_task"],
            metric=c["group_metric"],
        )  # every context input but dataset_desc

    def attach_competence(self) -> FeatureTables:
        """Computes the records' competence features (``data.competence``, from the training
        records of other groups) and their cold-start version, for the batches to carry."""
        from modellens_jax.data import competence

        memory = competence.Memory.of(self)
        ent = competence.Entities.of(self)
        self.competence = competence.encode(memory.features(ent, self.rec_model, self.rec_group))
        self.competence_cold = competence.encode(
            memory.features(ent, self.rec_model, self.rec_group, cold=True)
        )
        return self

    def untrained_rows(self, name_buckets: int, num_size_buckets: int) -> dict[str, np.ndarray]:
        """Rows of the categorical embedding tables (family, task, metric, size bucket, name
        token) that no training record uses, per table attribute of the scorer. Their rows never
        get a gradient, so the scorer starts them at zero (a neutral input) rather than at the
        random draw a held-out model or dataset would otherwise carry to evaluation."""
        c = self.corpus
        train = np.asarray(c["rec_split"]) == splits.TRAIN
        models = np.unique(self.rec_model[train])
        groups = np.unique(self.rec_group[train])

        def unused(ids: np.ndarray, n: int) -> np.ndarray:
            out = np.ones(n, bool)
            out[np.asarray(ids).reshape(-1)] = False
            return out

        m = self.model_cols
        return {
            "family_embed": unused(m["family"][models], len(c.vocab["families"])),
            "task_embed": unused(self.group_cols["task"][groups], len(c.vocab["tasks"])),
            "metric_embed": unused(self.group_cols["metric"][groups], len(c.vocab["metrics"])),
            "size_embed": unused(m["size_bucket"][models], num_size_buckets),
            "name_embed": unused(m["name_tokens"][models][m["name_mask"][models]], name_buckets),
        }


class Featurize(grain.transforms.Map):
    """Rows of lists -> the batch dict of ``modellens_jax.data.batch`` with fixed shapes."""

    def __init__(self, tables: FeatureTables, *, rows: int, list_size: int,
                 num_models: int = 0, num_groups: int = 0, slot_offset: tuple[int, int] = (0, 0),
                 device_tables: bool = False, blocks: int = 1, global_blocks: int = 0):  # fmt: skip
        self.t = tables
        self.device_tables = device_tables  # rows by index only (``ROW_KEYS``), gathered on device
        self.rows, self.list_size = rows, list_size
        self.num_models = num_models or rows * list_size
        self.num_groups = num_groups or max(1, rows * list_size // 2)
        if self.num_groups < rows:
            raise ValueError(f"input.max_groups_per_batch={num_groups} < rows={rows}")
        for what, n in (("rows", rows), ("models block", self.num_models),
                        ("groups block", self.num_groups)):  # fmt: skip
            if n % blocks:
                raise ValueError(f"batch {what} {n} does not split into {blocks} blocks")
        self.slot_offset = slot_offset
        # ``blocks`` shard-local blocks here, ``global_blocks`` in the global batch (a
        # multi-process batch is blocked by process too); the ``blocks`` key says how many
        self.blocks, self.global_blocks = blocks, max(global_blocks, blocks)

    def map(self, batch_rows: Sequence[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
        b = self.blocks
        rb, mb, gb = self.rows // b, self.num_models // b, self.num_groups // b
        parts = [
            self._block(batch_rows[i * rb : (i + 1) * rb], rb, mb, gb,
                        (self.slot_offset[0] + i * mb, self.slot_offset[1] + i * gb))
            for i in range(b)
        ]  # fmt: skip
        out = parts[0] if b == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.global_blocks > 1:
            out["blocks"] = np.zeros((self.rows, self.global_blocks), np.int8)
        return out

    def _block(
        self,
        batch_rows: Sequence[Sequence[np.ndarray]],
        R: int,
        num_models: int,
        num_groups: int,
        slot_offset: tuple[int, int],
    ) -> dict[str, np.ndarray]:
        t, L = self.t, self.list_size
        shape = (R, L)
        rec = np.zeros(shape, np.int64)
        mask = np.zeros(shape, bool)
        segment = np.zeros(shape, np.int32)
        list_id = np.zeros(shape, np.int64)
        n_lists = 0
        for r, row in enumerate(batch_rows):
            pos = 0
            for s, items in enumerate(row):
                n = len(items)
                rec[r, pos : pos + n] = items
                mask[r, pos : pos + n] = True
                segment[r, pos : pos + n] = s + 1
                list_id[r, pos : pos + n] = n_lists
                n_lists += 1
                pos += n
        if n_lists > num_groups:
            raise ValueError(f"{n_lists} lists exceed the batch's group block {num_groups}")
        models, model_slot = np.unique(np.where(mask, t.rec_model[rec], -1), return_inverse=True)
        model_slot = model_slot.reshape(shape)
        if models[0] == -1:  # padding slots point at a real row; masked out anyway
            models = models[1:]
            model_slot = np.maximum(model_slot - 1, 0)
        if len(models) > num_models:
            raise ValueError(f"{len(models)} models exceed input.max_models_per_batch")
        group_of_list = np.zeros(num_groups, np.int64)
        group_of_list[list_id[mask]] = t.rec_group[rec[mask]]
        out = {
            "mask": mask,
            "segment": segment,
            "model_slot": (model_slot + slot_offset[0]).astype(np.int32),
            "group_slot": (np.where(mask, list_id, 0) + slot_offset[1]).astype(np.int32),
            "value": np.where(mask, t.rec_value[rec], 0).astype(np.float32),
            "z": np.where(mask, t.rec_z[rec], 0).astype(np.float32),
        }
        mpad = np.zeros(num_models, np.int64)
        mpad[: len(models)] = models
        if self.device_tables:
            out["model_row"] = mpad.astype(np.int32)
            out["group_row"] = group_of_list.astype(np.int32)
            if t.competence is not None:
                out["record"] = rec.astype(np.int32)
            return out
        for k, col in t.model_cols.items():
            out[k] = col[mpad]
        out["model_desc"] = np.asarray(t.model_desc[mpad])  # stored dtype; cast on device
        for k, col in t.group_cols.items():
            out[k] = col[group_of_list]
        ds = t.group_dataset[group_of_list]
        out["dataset_desc"] = np.asarray(t.dataset_desc[ds])
        if t.competence is not None:
            for k, table in (("competence", t.competence), ("competence_cold", t.competence_cold)):
                out[k] = np.where(mask[..., None], table[rec], 0.0).astype(np.float32)
        return out


# What a device-tables batch carries instead of the entity rows: corpus model and group rows of
# its models/groups blocks, and (with competence features) the corpus record of each slot.
ROW_KEYS = ("model_row", "group_row", "record")


def train_dataset(
    tables: FeatureTables,
    *,
    rows: int,
    list_size: int,
    pack: bool,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_models: int = 0,
    num_groups: int = 0,
    worker_count: int = 0,
    slot_block: int | None = None,
    records: np.ndarray | None = None,
    device_tables: bool = False,
    blocks: int = 1,
) -> tuple[grain.IterDataset, TrainLists]:
    """The training stream for this process (``rows`` = process-local rows, ``num_models`` =
    process-local models block).

    Each process reads lists ``process_index::process_count`` of the shuffled stream. Its
    ``model_slot``/``group_slot`` point into the *global* models/groups blocks, which are the
    process-local blocks concatenated in mesh order: ``slot_block`` is this process's position
    there (``sharding.process_block``; default ``process_index``). ``records`` (a per-record
    mask) restricts the stream to those training records (an update's fine-tune set).
    ``device_tables``: batches carry row indices (``ROW_KEYS``) and the step gathers the rows
    (``train_state.expand``). ``blocks``: this process's batch is that many shard-local blocks
    (one per data shard it feeds: ``batch.py``), so the step's gathers stay on each shard."""
    src = TrainLists(tables.corpus, list_size=list_size, seed=seed, records=records)
    # No read threads: an element is a slice of an in-memory index array (microseconds), and
    # grain's default thread pool (16 threads, 500-element buffer, whose depth it re-measures
    # per element) cost ~6x the pipeline's own CPU. The loop's DevicePrefetch thread already
    # overlaps the whole pipeline with the step.
    ds = grain.MapDataset.source(src)[process_index::process_count].to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    )
    num_groups = num_groups or (min(4 * rows, rows * list_size // 2) if pack else rows)
    feat = Featurize(tables, rows=rows, list_size=list_size, num_models=num_models,
                     num_groups=num_groups, device_tables=device_tables, blocks=blocks,
                     global_blocks=blocks * process_count)  # fmt: skip
    ds = PackLists(ds, rows=rows, list_size=list_size, pack=pack, rec_model=tables.rec_model,
                   max_models=feat.num_models // blocks, max_lists=feat.num_groups // blocks,
                   blocks=blocks)  # fmt: skip
    blk = process_index if slot_block is None else int(slot_block)
    feat.slot_offset = (blk * feat.num_models, blk * feat.num_groups)
    ds = ds.map(feat)
    if worker_count > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return ds, src


# --- evaluation -----------------------------------------------------------------------------
def bucket_size(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << (n - 1).bit_length())


def eval_batches(
    tables: FeatureTables,
    split: int,
    setting: int | None,
    *,
    slots_per_batch: int = 8192,
    min_list: int = 16,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(batch, group ids per row; -1 = padding row) over every group of ``split``/``setting``
    with >= 2 records, one group per row, rows padded to power-of-two list buckets."""
    groups, lists = lists_by_group(tables.corpus, split, setting)
    by_bucket: dict[int, list[int]] = {}
    for i, x in enumerate(lists):
        by_bucket.setdefault(bucket_size(len(x), min_list), []).append(i)
    for L in sorted(by_bucket):
        R = max(1, slots_per_batch // L)
        feat = Featurize(tables, rows=R, list_size=L, num_groups=R)
        idx = by_bucket[L]
        for a in range(0, len(idx), R):
            chunk = idx[a : a + R]
            rows = [[lists[i]] for i in chunk]
            gid = np.full(R, -1, np.int64)
            gid[: len(chunk)] = groups[chunk]
            yield feat.map(rows), gid
