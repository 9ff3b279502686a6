"""ANN indexes over a collection's vectors: FAISS kinds on CPU, with GPU search mirrors.

Every kind stores vectors under sequential *slots* (FAISS's own ids) and keeps a slot -> vector-id
table plus a live mask. Deletes and replacements only clear the live bit (HNSW and the GPU indexes
cannot remove vectors) and searches skip dead slots through a FAISS `IDSelectorBitmap`; the index
is rebuilt from the store once the dead share grows (see `needs_rebuild`). The same bitmap carries
metadata filters, so a filter never costs top-k results on the exact kinds.

Metrics: `cosine` (vectors L2-normalised, inner product), `ip` (raw inner product) and `l2`
(scores are negative squared distances, so higher is better for every metric).
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from indexing.errors import DimensionMismatch, InvalidDocument
from indexing.slots import SlotTable

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf_flat", "ivf_pq")
METRICS = ("cosine", "ip", "l2")
GPU_MAX_K = 2048  # FAISS GPU limit on k and nprobe
AUTO_FLAT_MAX = 50_000  # below this, exact search is both fast and perfect
MIN_IVF_TRAIN = 2_000  # an IVF index trained on fewer vectors is worse than a flat one
IVF_TRAIN_SAMPLE = 100_000  # k-means on a sample: build time stays flat as collections grow
MIN_PQ_TRAIN = 39 * 256  # 8-bit product quantizers want 39 training points per centroid
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
RESCORE_OVERSAMPLE = 4  # IVF-PQ: candidates per hit re-scored on the stored float vectors
MAX_OVERSAMPLE = 64
MAX_EF_SEARCH = 32_768  # a per-request efSearch beyond this walks most of any graph: ask for exact instead
REBUILD_DEAD_FRACTION = 0.25
_GPU_LOCK = threading.Lock()  # FAISS GPU indexes are not thread-safe, even for reads: one at a time


@dataclass(frozen=True)
class SearchParams:
    """Per-search effort, overriding the index's defaults: recall against latency, chosen by the caller.

    `ef`: HNSW beam width (efSearch; at least k is always used); `nprobe`: inverted lists an IVF
    search visits (capped at the lists there are); `exact`: score every live vector (brute force; the
    reference an ANN answer is measured against). `rescore` / `oversample`: IVF-PQ ranks
    k * oversample candidates by their codes, then re-scores them on the stored float vectors (the
    codes order neighbours coarsely; the floats are exact). A knob the built kind does not have is
    ignored, so one request works on a collection whatever kind `auto` built.
    """

    ef: int | None = None
    nprobe: int | None = None
    exact: bool = False
    rescore: bool = True
    oversample: int | None = None


@dataclass(frozen=True)
class EffortUsed:
    """What a search actually ran with: the kind searched and its knobs (None where it has none)."""

    kind: str
    ef: int | None
    nprobe: int | None
    exact: bool
    rescored: int | None = None  # candidates per query re-scored on stored vectors (IVF-PQ)


def resolve_kind(kind: str, n: int) -> str:
    """The concrete kind to build for `n` vectors; IVF kinds fall back to flat until trainable."""
    if kind not in INDEX_KINDS:
        raise InvalidDocument(f"index: unknown kind {kind!r}; one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "flat" if n < AUTO_FLAT_MAX else "hnsw"
    if kind == "ivf_flat" and n < MIN_IVF_TRAIN or kind == "ivf_pq" and n < MIN_PQ_TRAIN:
        return "flat"
    return kind


def ivf_nlist(n: int) -> int:
    """Inverted lists for `n` vectors: about 4*sqrt(n), at least 39 training points per list."""
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def pq_subquantizers(dim: int) -> int:
    """Largest sub-quantizer count <= dim/4 that divides dim (8-bit codes, 4 dims per code)."""
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return m


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def build_faiss_index(kind: str, dim: int, metric: str, train: np.ndarray | None, n: int = 0) -> faiss.Index:
    """An empty (trained, where the kind needs it) CPU FAISS index of a concrete kind."""
    fm = _faiss_metric(metric)
    if kind == "flat":
        return faiss.IndexFlat(dim, fm)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, fm)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    if train is None or len(train) < MIN_IVF_TRAIN:
        raise ValueError(f"{kind} needs at least {MIN_IVF_TRAIN} training vectors")
    nlist = min(ivf_nlist(max(n, len(train))), len(train) // 39)  # sized for the collection, trainable
    quantizer = faiss.IndexFlat(dim, fm)
    if kind == "ivf_flat":
        index: faiss.IndexIVF = faiss.IndexIVFFlat(quantizer, dim, nlist, fm)
    elif kind == "ivf_pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim), 8, fm)
    else:
        raise ValueError(f"not a concrete index kind: {kind}")
    index.cp.min_points_per_centroid = 1  # we size nlist ourselves; silence FAISS's warning
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    index.nprobe = default_nprobe(nlist)
    index.own_fields = True
    quantizer.this.disown()
    return index


def _last_occurrences(vids: np.ndarray) -> np.ndarray:
    """True at the last occurrence of each id."""
    _, first_reversed = np.unique(vids[::-1], return_index=True)
    last = np.zeros(len(vids), bool)
    last[len(vids) - 1 - first_reversed] = True
    return last


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: ~1/16 of them (recall@10 >= 0.95 on clustered data), capped for GPU."""
    return int(min(GPU_MAX_K, max(8, nlist // 16)))


class VectorIndex:
    """A FAISS index with slot bookkeeping, a live mask and an optional GPU search mirror."""

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        kind: str = "flat",
        faiss_index: faiss.Index | None = None,
        slot_vids: np.ndarray | None = None,
        live: np.ndarray | None = None,
        device: str = "cpu",
    ) -> None:
        if metric not in METRICS:
            raise InvalidDocument(f"metric: unknown metric {metric!r}; one of {', '.join(METRICS)}")
        self.dim = dim
        self.metric = metric
        self.kind = kind  # the concrete kind built
        self.index = faiss_index if faiss_index is not None else build_faiss_index(kind, dim, metric, None)
        n = self.index.ntotal
        self._slot_vid = np.zeros(max(16, n), dtype=np.int64)
        self._live = np.zeros(max(16, n), dtype=bool)
        if n:
            assert slot_vids is not None and live is not None and len(slot_vids) == n == len(live)
            self._slot_vid[:n] = slot_vids
            self._live[:n] = live
        live_slots = np.flatnonzero(self._live[:n])
        self._vid_slot = SlotTable(self._slot_vid[live_slots], live_slots)
        self._lock = threading.RLock()
        self.ef_search = HNSW_EF_SEARCH  # search-time knobs, per index (benchmarks sweep them)
        self.nprobe = faiss.extract_index_ivf(self.index).nprobe if kind.startswith("ivf") else 0
        self._mirror = _make_mirror(device, self) if device != "cpu" else None

    # ---- size ----
    @property
    def slots(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return len(self._vid_slot)

    @property
    def dead(self) -> int:
        return self.slots - len(self)

    def __contains__(self, vid: int) -> bool:
        return bool(self._vid_slot.slots_of(np.array([vid], np.int64))[0] >= 0)

    def needs_rebuild(self, requested_kind: str) -> bool:
        """Too many dead slots, or the collection outgrew (or grew into) another kind."""
        if self.slots and self.dead / self.slots > REBUILD_DEAD_FRACTION:
            return True
        target = resolve_kind(requested_kind, len(self))
        if target != self.kind:
            return True
        if self.kind.startswith("ivf"):  # retrain once the collection wants twice the lists it has
            wanted = min(ivf_nlist(len(self)), IVF_TRAIN_SAMPLE // 39)
            return wanted > 2 * faiss.extract_index_ivf(self.index).nlist
        return False

    # ---- writes ----
    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Check the dimension and normalise for cosine; returns a contiguous float32 copy."""
        x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
        if x.ndim != 2 or x.shape[1] != self.dim:
            got = x.shape[-1] if x.ndim else 0
            raise DimensionMismatch(f"vector: expected dimension {self.dim}, got {got}")
        if not np.isfinite(x).all():
            raise InvalidDocument("vector: contains NaN or infinity")
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidDocument("vector: zero vector has no cosine similarity")
            x /= norms
        return x

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under their vector ids."""
        x = self.prepare(vectors)
        vids = np.asarray(vids, dtype=np.int64)
        with self._lock:
            self.remove(vids)
            start = self.slots
            self.index.add(x)
            end = self.slots
            self._grow(end)
            self._slot_vid[start:end] = vids
            last = _last_occurrences(vids)  # a repeated id keeps its last vector
            self._live[start:end] = last
            self._vid_slot.assign(vids[last], start + np.flatnonzero(last))
            if self._mirror is not None:
                self._mirror.added(x)

    def remove(self, vids: np.ndarray) -> int:
        """Mark vectors dead; returns how many were live."""
        with self._lock:
            freed = self._vid_slot.discard(np.asarray(vids, dtype=np.int64))
            self._live[freed] = False
            if len(freed) and self._mirror is not None:
                self._mirror.live_changed()
        return len(freed)

    def _grow(self, n: int) -> None:
        if n > len(self._slot_vid):
            cap = max(n, 2 * len(self._slot_vid))
            self._slot_vid = np.resize(self._slot_vid, cap)
            live = np.zeros(cap, dtype=bool)
            live[: len(self._live)] = self._live
            self._live = live

    # ---- search ----
    @property
    def searches_exactly(self) -> bool:
        """Whether `SearchParams(exact=True)` is exact on this index: every kind but IVF-PQ, whose
        codes are lossy (the collection then scores the store's vectors)."""
        return self.kind != "ivf_pq"

    def effort(self, k: int, params: SearchParams | None = None) -> EffortUsed:
        """The knobs a top-k search with `params` runs with on this index."""
        params = params or SearchParams()
        if self.kind == "flat":
            return EffortUsed(self.kind, None, None, True)
        if self.kind == "hnsw":
            if params.exact:
                return EffortUsed(self.kind, None, None, True)
            return EffortUsed(self.kind, max(params.ef or self.ef_search, k), None, False)
        nlist = faiss.extract_index_ivf(self.index).nlist
        nprobe = nlist if params.exact else min(params.nprobe or self.nprobe, nlist)
        return EffortUsed(self.kind, None, nprobe, nprobe >= nlist and self.kind == "ivf_flat")

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_vids: np.ndarray | None = None,
        params: SearchParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vector ids) per query; -1 ids pad rows with fewer than k live matches.

        `params.exact` on IVF-PQ probes every list of codes: still approximate (see `searches_exactly`)."""
        q = self.prepare(queries)
        with self._lock:
            n = self.slots
            mask = None
            if allowed_vids is not None:
                mask = np.zeros(n, dtype=bool)
                slots = self._vid_slot.slots_of(allowed_vids)
                mask[slots[slots >= 0]] = True
            elif self.dead:
                mask = self._live[:n]
            k_eff = int(min(k, n if mask is None else int(mask.sum())))
            if k_eff <= 0:
                return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
            effort = self.effort(k_eff, params)
            custom = params is not None and params != SearchParams() and self.kind != "flat"
            if self._mirror is not None and k_eff <= GPU_MAX_K and not custom:
                scores, slots_found = self._mirror.search(q, k_eff, mask)
            else:  # a request's own knobs run on the CPU master, whose knobs are exactly these
                scores, slots_found = self._faiss_search(q, k_eff, mask, effort)
            vids = np.where(slots_found >= 0, self._slot_vid[np.maximum(slots_found, 0)], -1)
        if self.metric == "l2":
            scores = -scores
        if k_eff < k:
            pad = k - k_eff
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            vids = np.pad(vids, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), vids.astype(np.int64)

    def _faiss_search(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, effort: EffortUsed | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        index, params = self.faiss_call(mask, effort or self.effort(k))
        return index.search(q, k, params=params)

    def faiss_call(
        self, mask: np.ndarray | None, effort: EffortUsed
    ) -> tuple[faiss.Index, faiss.SearchParameters | None]:
        """The FAISS index to search and its parameters, for a live/filter mask and an effort."""
        kwargs: dict[str, Any] = {}
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
            selector.referenced_bitmap = bitmap  # keep the buffer alive as long as the selector
            kwargs["sel"] = selector
        plain = faiss.SearchParameters(**kwargs) if kwargs else None
        if self.kind == "hnsw" and effort.exact:  # brute force over the graph's own vector storage
            return faiss.downcast_index(self.index.storage), plain
        if self.kind == "hnsw":
            return self.index, faiss.SearchParametersHNSW(efSearch=effort.ef, **kwargs)
        if self.kind.startswith("ivf"):
            return self.index, faiss.SearchParametersIVF(nprobe=effort.nprobe, **kwargs)
        return self.index, plain

    def exact_vectors(self, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The live vectors of `vids` (with their vids) read from memory, when this kind stores them
        uncompressed (flat, HNSW); None otherwise (IVF lists, product codes: ask the store)."""
        storage = self.index if self.kind == "flat" else (
            faiss.downcast_index(self.index.storage) if self.kind == "hnsw" else None)
        if not isinstance(storage, faiss.IndexFlat):
            return None
        vids = np.asarray(vids, dtype=np.int64)
        with self._lock:
            slots = self._vid_slot.slots_of(vids)
            held = np.flatnonzero(slots >= 0)
            if not len(held):
                return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            held = held[np.argsort(slots[held])]  # ascending slots: the gather reads memory in order
            xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim).reshape(-1, self.dim)
            return vids[held], np.take(xb, slots[held], axis=0)  # a copy: safe once the lock is released

    # ---- persistence ----
    def live_vids(self) -> np.ndarray:
        return self._slot_vid[: self.slots][self._live[: self.slots]].copy()

    def serialize(self) -> dict[str, np.ndarray]:
        """Arrays that reproduce this index exactly (always the CPU master copy)."""
        with self._lock:
            return {
                "faiss": faiss.serialize_index(self.index),
                "slot_vids": self._slot_vid[: self.slots].copy(),
                "live": self._live[: self.slots].copy(),
            }

    @classmethod
    def deserialize(
        cls, arrays: dict[str, np.ndarray], dim: int, metric: str, kind: str, device: str = "cpu"
    ) -> VectorIndex:
        index = faiss.deserialize_index(np.asarray(arrays["faiss"], dtype=np.uint8))
        if index.d != dim:
            raise ValueError(f"index dimension {index.d} differs from the collection's {dim}")
        if index.ntotal != len(arrays["slot_vids"]) or index.ntotal != len(arrays["live"]):
            raise ValueError("index vector count differs from its slot table")
        return cls(dim, metric, kind, index, arrays["slot_vids"], arrays["live"], device)

    @classmethod
    def build(
        cls,
        dim: int,
        metric: str,
        requested_kind: str,
        n_hint: int,
        batches: Callable[[], Any],
        device: str = "cpu",
        train_sample: int = IVF_TRAIN_SAMPLE,
    ) -> VectorIndex:
        """Build from scratch out of `batches()` (an iterable of (vids, vectors), re-iterable for IVF)."""
        kind = resolve_kind(requested_kind, n_hint)
        train = None
        if kind.startswith("ivf"):
            sample: list[np.ndarray] = []
            taken = 0
            for _, vecs in batches():
                sample.append(vecs)
                taken += len(vecs)
                if taken >= train_sample:
                    break
            probe = cls(dim, metric, "flat")
            train = probe.prepare(np.concatenate(sample)) if sample else None
        index = cls(dim, metric, kind, build_faiss_index(kind, dim, metric, train, n_hint), device=device)
        for vids, vecs in batches():
            index.add(vids, vecs)
        return index


class _TorchMirror:
    """Exact search on a torch device (GPU): vectors copied there, scored by matmul + top-k.

    Uses `kernels.similarity_topk(queries, corpus, k)` when the kernels package exports it and no
    slot is masked; masked searches score everything and set masked slots to -inf.
    """

    def __init__(self, device: str, owner: VectorIndex) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.owner = owner
        n = owner.slots
        stored = owner.index.reconstruct_n(0, n) if n else np.zeros((0, owner.dim), np.float32)
        self.vectors = torch.empty((max(1024, n), owner.dim), dtype=torch.float32, device=self.device)
        self.vectors[:n] = torch.from_numpy(stored).to(self.device)
        self.n = n
        self.similarity_topk = _kernel_topk()

    def added(self, x: np.ndarray) -> None:
        torch = self.torch
        need = self.n + len(x)
        if need > self.vectors.shape[0]:
            grown = torch.empty(
                (max(need, 2 * self.vectors.shape[0]), self.owner.dim),
                dtype=torch.float32,
                device=self.device,
            )
            grown[: self.n] = self.vectors[: self.n]
            self.vectors = grown
        self.vectors[self.n : need] = torch.from_numpy(x).to(self.device)
        self.n = need

    def live_changed(self) -> None:
        """Nothing to do: the live mask travels with each search."""

    def search(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        queries = torch.from_numpy(q).to(self.device)
        corpus = self.vectors[: self.n]
        if mask is None and self.similarity_topk is not None and self.owner.metric != "l2":
            scores, ids = self.similarity_topk(queries, corpus, k)
        else:
            if self.owner.metric == "l2":
                sims = -torch.cdist(queries, corpus).square()
            else:
                sims = queries @ corpus.T
            if mask is not None:
                sims[:, ~torch.from_numpy(mask).to(self.device)] = -torch.inf
            scores, ids = torch.topk(sims, k, dim=1)
            if self.owner.metric == "l2":
                scores = -scores  # FAISS convention: distances, flipped back by the caller
        return scores.float().cpu().numpy(), ids.long().cpu().numpy()


class _FaissGpuMirror:
    """A faiss-gpu copy of the CPU master index, re-uploaded after writes, searched under one lock.

    GPU indexes are not thread-safe even for reads, cannot remove ids and cap k/nprobe at 2048:
    so the CPU master takes every write, the copy is refreshed lazily before the next search,
    and masked slots are dropped by over-fetching and filtering on the CPU.
    """

    def __init__(self, owner: VectorIndex) -> None:
        self.owner = owner
        self.resources = faiss.StandardGpuResources()
        self.gpu_index: faiss.Index | None = None
        self.stale = True

    def added(self, x: np.ndarray) -> None:
        self.stale = True

    def live_changed(self) -> None:
        pass

    def search(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.stale or self.gpu_index is None:
            self.gpu_index = _index_to_gpu(self.resources, self.owner.index)
            self.stale = False
        fetch = k if mask is None else min(GPU_MAX_K, self.owner.slots)
        with _GPU_LOCK:
            scores, slots = self.gpu_index.search(q, fetch)
        if mask is None:
            return scores, slots
        out_s = np.full((len(q), k), -np.inf if self.owner.metric != "l2" else np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for row in range(len(q)):
            keep = (slots[row] >= 0) & mask[np.maximum(slots[row], 0)]
            s, i = scores[row][keep][:k], slots[row][keep][:k]
            out_s[row, : len(s)], out_i[row, : len(i)] = s, i
        if (out_i < 0).any():  # the mask hid too much of the GPU's top-2048: the CPU master is exact
            return self.owner._faiss_search(q, k, mask)
        return out_s, out_i


def _index_to_gpu(resources: Any, index: faiss.Index) -> faiss.Index:
    """Upload, preferring CAGRA for HNSW graphs where this faiss has cuVS."""
    if isinstance(index, faiss.IndexHNSWFlat) and hasattr(faiss, "GpuIndexCagra"):
        try:
            cagra = faiss.GpuIndexCagra(resources, index.d, index.metric_type)
            cagra.copyFrom(index)
            return cagra
        except (RuntimeError, AttributeError, TypeError):
            pass  # fall back to a flat GPU copy of the graph's vectors
    if isinstance(index, faiss.IndexHNSWFlat):
        flat = faiss.IndexFlat(index.d, index.metric_type)
        flat.add(index.reconstruct_n(0, index.ntotal))
        index = flat
    return faiss.index_cpu_to_gpu(resources, 0, index)


def _kernel_topk() -> Callable[..., Any] | None:
    try:
        kernels = importlib.import_module("kernels")
    except ImportError:
        return None
    return getattr(kernels, "similarity_topk", None)


def gpu_backend(device: str) -> str:
    """Which search mirror `device` gets: 'faiss-gpu', 'torch' or 'cpu' (none: FAISS on the CPU).

    `auto` and `cuda[:N]` prefer faiss-gpu, then torch on CUDA; `torch:<device>` forces the torch
    exact-search backend on any torch device (so it is testable on a CPU-only machine).
    """
    if device.startswith("torch:"):
        return "torch"
    if device == "cpu":
        return "cpu"
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        return "faiss-gpu"
    import torch

    return "torch" if torch.cuda.is_available() else "cpu"


def _make_mirror(device: str, owner: VectorIndex) -> _TorchMirror | _FaissGpuMirror | None:
    backend = gpu_backend(device)
    if backend == "faiss-gpu":
        return _FaissGpuMirror(owner)
    if backend == "torch":
        if owner.kind != "flat":
            return None  # the torch backend is exact search; ANN kinds stay on FAISS
        torch_device = device.removeprefix("torch:")
        return _TorchMirror("cuda" if torch_device == "auto" else torch_device, owner)
    return None
