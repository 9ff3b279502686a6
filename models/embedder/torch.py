"""sentence-transformers embedder with explicit tokenization, so callers can batch by tokens.

The server tokenizes once (to count real tokens, admit by token budget and sort by length), then
runs padded batches through the model's own modules: pooling and normalisation are whatever the
model directory declares (modules.json), never re-implemented here.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.device import pick_device, pick_dtype
from models.embedder.chunking import Span, split_texts
from models.embedder.onnx import OnnxTransformer, OnnxUnavailable, crossover_tokens
from models.embedder.onnx import missing as onnx_missing
from models.embedder.tempscale import apply_attention_temperature, check_temperature, space_id, split_space
from models.resolve import ResolvedModel, resolve_model
from models.safety import check_safe_weights

log = logging.getLogger(__name__)

Truncate = Literal["end", "start", "none"]
Runtime = Literal["torch", "onnx", "auto"]
RUNTIMES: tuple[str, ...] = ("torch", "onnx", "auto")
ONNX_ALWAYS = 1 << 62


class InputTooLong(ValueError):
    """An input exceeds the model's maximum length and truncation was disabled."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(f"input[{index}] has {tokens} tokens, more than the model's limit of {limit}")
        self.index, self.tokens, self.limit = index, tokens, limit


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of one input, ready to be padded into any batch."""

    ids: tuple[int, ...]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.ids)


def _trained_for_truncation(model_dir: Path) -> bool:
    """Matryoshka-trained models say so in their sentence-transformers config or model card."""
    cfg = model_dir / "config_sentence_transformers.json"
    if cfg.exists():
        try:
            data = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            data = {}
        if data.get("matryoshka_dims") or data.get("truncate_dim"):
            return True
    card = model_dir / "README.md"
    return card.exists() and "matryoshka" in card.read_text(errors="ignore").lower()


class SentenceTransformerEmbedder:
    """One loaded sentence-transformers model plus the facts the server needs about it."""

    def __init__(self, resolved: ResolvedModel, device: str = "auto", dtype: str = "auto",
                 attention_temperature: float = 1.0, runtime: Runtime = "torch",
                 onnx_max_tokens: int | None = None, onnx_cache_dir: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = resolved.name
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        kwargs = {"local_files_only": True} if resolved.is_local else {}
        if resolved.is_local:
            check_safe_weights(resolved.path)  # never unpickle weights from a user-supplied path
        self.model = SentenceTransformer(resolved.path, device=str(self.device),
                                         model_kwargs={"use_safetensors": True}, **kwargs)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self.model.eval()
        self.attention_temperature = check_temperature(attention_temperature)
        if self.attention_temperature != 1.0:
            changed = apply_attention_temperature(self.model, self.attention_temperature)
            log.info("TempScale: attention temperature %g in %d attention modules", self.attention_temperature,
                     changed)
        self.tokenizer = self.model.tokenizer
        self.dim = int(self.model.get_embedding_dimension())
        self.max_seq_length = int(self.model.max_seq_length)
        self.prompts: dict[str, str] = dict(self.model.prompts or {})
        self.normalized = any(type(m).__name__ == "Normalize" for m in self.model)
        local_dir = Path(resolved.path)
        self.supports_truncation = local_dir.is_dir() and _trained_for_truncation(local_dir)
        self._pad_id = self.tokenizer.pad_token_id or 0
        # We tokenize untruncated on purpose (to count and report real lengths), then cut ourselves.
        self.tokenizer.model_max_length = 1 << 30
        self._wants_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self.runtime = runtime
        self.onnx: OnnxTransformer | None = None
        self.onnx_max_tokens = 0  # a batch of at most this many padded tokens runs on ONNX Runtime
        self._pending_onnx: tuple[torch.nn.Module, tuple[str, ...], Path | None, int | None] | None = None
        self._prepare_lock = threading.Lock()
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime != "torch":
            self._plan_onnx(runtime, onnx_max_tokens, onnx_cache_dir)

    # -- runtimes -----------------------------------------------------------------------------
    def _plan_onnx(self, runtime: Runtime, max_tokens: int | None, cache_dir: Path | None) -> None:
        """The checks that need no model run, at load; `auto` keeps torch wherever ONNX Runtime cannot run."""
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"onnx_max_tokens must be >= 0, got {max_tokens}")
        if runtime == "auto" and max_tokens == 0:
            return
        first = self.model[0]
        transformer = getattr(first, "auto_model", None)
        if self.device.type != "cpu":
            reason = f"ONNX Runtime runs the embedder on CPU only, and the device is {self.device.type}"
        elif self.dtype != torch.float32:
            reason = f"ONNX Runtime runs the embedder in float32 only, and the dtype is {self.dtype}"
        elif not isinstance(transformer, torch.nn.Module):
            reason = f"the model's first module ({type(first).__name__}) is not a transformer"
        else:
            reason = onnx_missing()
        if reason is not None:
            if runtime == "onnx":
                raise OnnxUnavailable(reason)
            log.info("embedder runtime auto: torch only (%s)", reason)
            return
        names = ("input_ids", "attention_mask") + (("token_type_ids",) if self._wants_token_types else ())
        self._pending_onnx = (transformer, names, cache_dir, max_tokens)

    def prepare(self) -> None:
        """Export (or load) the ONNX graph, check it against torch and measure the crossover, here and now.

        All of it runs torch, so it waits for the first batch and runs on the thread that embeds:
        torch work on a loading thread followed by inference on another one left two OpenMP thread
        teams on the cores, and every later torch batch of the server ran slower (docs/BENCHMARKS.md).
        `embed_tokenized` calls this first; a caller may call it earlier, from that same thread.
        """
        if self._pending_onnx is None:
            return
        with self._prepare_lock:
            if self._pending_onnx is None:
                return
            transformer, names, cache_dir, max_tokens = self._pending_onnx
            try:
                self.onnx = OnnxTransformer(transformer, names, cache_dir=cache_dir, label=self.name)
            except OnnxUnavailable as exc:
                if self.runtime == "onnx":
                    raise
                log.warning("embedder runtime auto: torch only (%s)", exc)
                self._pending_onnx = None
                return
            self._after_transformer = list(self.model)[1:]
            if max_tokens is not None:
                self.onnx_max_tokens = max_tokens
            elif self.runtime == "onnx":
                self.onnx_max_tokens = ONNX_ALWAYS
            else:
                word = self.tokenizer("search", add_special_tokens=False)["input_ids"][:1] or [self._pad_id]

                def probe(length: int) -> tuple[np.ndarray, np.ndarray]:
                    ids = np.full((1, length), word[0], dtype=np.int64)
                    return ids, np.ones_like(ids)

                self.onnx_max_tokens = crossover_tokens(lambda n: self._forward_torch(*probe(n)),
                                                        lambda n: self._forward_onnx(*probe(n)))
            if self.onnx_max_tokens == 0:
                self.onnx = None
            self._pending_onnx = None
        log.info("embedder runtime %s: %s", self.runtime, self.runtime_summary)

    @property
    def runtime_summary(self) -> str:
        """Which runtime runs which batches, in words (logged once known, reported by /v1/models)."""
        if self._pending_onnx is not None:
            return f"{self.runtime}: decided at the first batch"
        if self.onnx is None:
            return "torch"
        if self.onnx_max_tokens >= ONNX_ALWAYS:
            return "onnx"
        return f"onnx up to {self.onnx_max_tokens} padded tokens per batch, torch above"

    def runtime_for(self, rows: int, width: int) -> str:
        """The runtime a padded batch of `rows` x `width` tokens runs on."""
        return "onnx" if self.onnx is not None and rows * width <= self.onnx_max_tokens else "torch"

    @property
    def space(self) -> str:
        """The vector space this embedder writes: the model name, tagged when TempScale is on."""
        return space_id(self.name, self.attention_temperature)

    # -- tokenization -------------------------------------------------------------------------
    def prompt_for(self, input_type: str | None) -> str:
        """The model's own query/document prompt; empty when its config defines none."""
        if input_type is None:
            return ""
        return self.prompts.get(input_type, "") or ""

    def tokenize(self, texts: list[str], input_type: str | None = None,
                 truncate: Truncate = "end") -> list[TokenizedText]:
        prompt = self.prompt_for(input_type)
        full = [prompt + t for t in texts]
        enc = self.tokenizer(full, add_special_tokens=True, truncation=False)["input_ids"]
        out: list[TokenizedText] = []
        over: list[int] = []
        for i, ids in enumerate(enc):
            if len(ids) > self.max_seq_length:
                if truncate == "none":
                    raise InputTooLong(i, len(ids), self.max_seq_length)
                over.append(i)
            out.append(TokenizedText(tuple(ids)))
        if over:
            side = "left" if truncate == "start" else "right"
            previous = self.tokenizer.truncation_side
            self.tokenizer.truncation_side = side
            try:
                cut = self.tokenizer([full[i] for i in over], add_special_tokens=True, truncation=True,
                                     max_length=self.max_seq_length)["input_ids"]
            finally:
                self.tokenizer.truncation_side = previous
            for i, ids in zip(over, cut, strict=True):
                out[i] = TokenizedText(tuple(ids), truncated=True)
        return out

    # -- chunking -----------------------------------------------------------------------------
    def chunk_budget(self, input_type: str | None = "document") -> int:
        """Text tokens one input can hold: the window less the special tokens and the model's prompt."""
        overhead = len(self.tokenizer([self.prompt_for(input_type)], add_special_tokens=True)["input_ids"][0])
        return max(1, self.max_seq_length - overhead)

    def split(self, texts: list[str], max_tokens: int, overlap: int) -> list[list[Span]]:
        """Character spans of each text's chunks (one span covering a text that fits)."""
        return split_texts(self.tokenizer, texts, max_tokens, overlap)

    # -- inference ----------------------------------------------------------------------------
    def embed_tokenized(self, batch: list[TokenizedText]) -> np.ndarray:
        """One padded forward pass; pooling masks the padding, so rows don't depend on batch-mates."""
        self.prepare()
        width = max(len(t) for t in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, t in enumerate(batch):
            ids[row, : len(t)] = t.ids
            mask[row, : len(t)] = 1
        if self.runtime_for(len(batch), width) == "onnx":
            return self._forward_onnx(ids, mask)
        return self._forward_torch(ids, mask)

    @torch.inference_mode()
    def _forward_torch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        features = {"input_ids": torch.from_numpy(ids).to(self.device),
                    "attention_mask": torch.from_numpy(mask).to(self.device)}
        if self._wants_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        out = self.model.forward(features)["sentence_embedding"]
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def _forward_onnx(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The transformer on ONNX Runtime, then the model's own pooling/dense/normalise modules."""
        assert self.onnx is not None
        features = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                    "token_embeddings": torch.from_numpy(self.onnx.run(ids, mask))}
        for module in self._after_transformer:
            features = module(features)
        return features["sentence_embedding"].float().numpy()

    def encode(self, texts: list[str], input_type: str | None = None, batch_size: int = 32,
               truncate: Truncate = "end") -> np.ndarray:
        """Offline encoding (batch jobs, evaluation): length-sorted batches, float32 rows."""
        return self.encode_with_truncation(texts, input_type, batch_size, truncate)[0]

    def encode_with_truncation(self, texts: list[str], input_type: str | None = None, batch_size: int = 32,
                               truncate: Truncate = "end") -> tuple[np.ndarray, list[int]]:
        """`encode`, plus the positions of texts cut to `max_seq_length` (the batch job reports them)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        toks = self.tokenize(texts, input_type, truncate)
        order = sorted(range(len(toks)), key=lambda i: len(toks[i]))
        out = np.empty((len(toks), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.embed_tokenized([toks[i] for i in idx])
        return out, [i for i, t in enumerate(toks) if t.truncated]


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None, renormalize: bool = True) -> np.ndarray:
    """Matryoshka truncation: keep the leading dimensions and re-normalise."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = np.ascontiguousarray(vectors[:, :dimensions])
    if renormalize:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.maximum(norms, 1e-12)
    return cut.astype(np.float32, copy=False)


def load_embedder(name: str, device: str = "auto", dtype: str = "auto",
                  attention_temperature: float = 1.0, runtime: Runtime = "torch",
                  onnx_max_tokens: int | None = None,
                  onnx_cache_dir: Path | None = None) -> SentenceTransformerEmbedder:
    """`runtime` "torch" (the default for batch jobs: their batches are long) is exact torch; "onnx"
    runs every batch on ONNX Runtime (CPU); "auto" runs batches up to `onnx_max_tokens` padded tokens
    there (measured on this machine when None) and the rest on torch."""
    resolved = resolve_model(name)
    log.info("loading embedder %s from %s (%s)", name, resolved.path, resolved.source)
    return SentenceTransformerEmbedder(resolved, device=device, dtype=dtype,
                                       attention_temperature=attention_temperature, runtime=runtime,
                                       onnx_max_tokens=onnx_max_tokens, onnx_cache_dir=onnx_cache_dir)


def load_space_embedder(space: str, device: str = "auto", dtype: str = "auto") -> SentenceTransformerEmbedder:
    """The embedder that writes the vector space a collection records (model + TempScale temperature)."""
    model, temperature = split_space(space)
    return load_embedder(model, device=device, dtype=dtype, attention_temperature=temperature)
