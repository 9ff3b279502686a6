"""ONNX Runtime for the embedder's transformer, used where it beats torch: short inputs on CPU.

A search embeds one query of ten-odd tokens. On CPU torch spends most of such a pass in per-op
overhead (oneDNN's small-GEMM setup, module dispatch), while ONNX Runtime's MLAS kernels and lean
executor run the same graph faster (docs/BENCHMARKS.md). On long batches torch is as fast or faster, so the
embedder routes each batch by its padded size (`crossover_tokens` measures where the two meet on the
machine at hand). Only the transformer runs here: pooling, dense and normalisation stay the model's
own torch modules, so the two runtimes differ by float32 rounding alone (the export is checked
against torch before it is used).

The exported graph is cached on disk under a digest of the weights, the config, the logit scale
(TempScale) and the torch/transformers/onnxruntime versions; it is written to a temporary name and
renamed into place, and a file that fails to load is removed and exported again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.cache_dirs import rrs_cache_dir

log = logging.getLogger(__name__)

OPSET = 17
# The export must agree with torch on a shape it was not traced at (a baked-in shape would not).
EXPORT_CHECK_ATOL = 1e-3


class OnnxUnavailable(RuntimeError):
    """This model cannot run on ONNX Runtime here (package missing, unsupported layout, bad export)."""


def missing() -> str | None:
    """Why ONNX Runtime cannot run here, or None: onnxruntime and onnx (torch's exporter writes with it)."""
    if all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx")):
        return None
    return "onnxruntime and onnx are not installed (pip install onnxruntime onnx)"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/rrs/onnx` (else `~/.cache/rrs/onnx`), beside the GGUF cache."""
    return rrs_cache_dir("onnx")


class _LastHidden(nn.Module):
    """The transformer as a function of positional tensors, returning token embeddings only."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True).last_hidden_state


def _scales(model: nn.Module) -> list[float]:
    """Attention logit scales: TempScale changes these attributes, not the weights."""
    return [float(m.scaling) for m in model.modules() if isinstance(getattr(m, "scaling", None), float)]


def model_digest(model: nn.Module, input_names: tuple[str, ...]) -> str:
    """What the exported graph depends on: weights, config, logit scales, input names, versions."""
    import onnxruntime
    import transformers

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    config = getattr(model, "config", None)
    h.update(config.to_json_string().encode() if config is not None else b"")
    h.update(repr((_scales(model), input_names, OPSET, torch.__version__, transformers.__version__,
                   onnxruntime.__version__)).encode())
    return h.hexdigest()[:24]


def _probe_inputs(input_names: tuple[str, ...], rows: int, width: int, pad_last: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(rows * 1000 + width)
    ids = rng.integers(1000, 2000, size=(rows, width), dtype=np.int64)
    mask = np.ones((rows, width), dtype=np.int64)
    if pad_last and rows > 1:
        mask[-1, width // 2:] = 0
    by_name = {"input_ids": ids, "attention_mask": mask}
    return [by_name.get(name, np.zeros_like(ids)) for name in input_names]


class OnnxTransformer:
    """An ONNX Runtime session over one transformer module, exported on first use and cached."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...], cache_dir: Path | None = None,
                 threads: int | None = None, label: str = "model") -> None:
        if reason := missing():
            raise OnnxUnavailable(reason)
        unknown = set(input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise OnnxUnavailable(f"the model takes inputs this export does not feed: {sorted(unknown)}")
        self.input_names = input_names
        self.threads = threads or torch.get_num_threads()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        safe_label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label.split("/")[-1])
        self.path = self.cache_dir / f"{safe_label}-{model_digest(model, input_names)}.onnx"
        self.exported = False
        self.session = self._open(model)

    # -- export and cache ----------------------------------------------------------------------
    def _export(self, model: nn.Module) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{uuid.uuid4().hex}-{self.path.name}")
        wrapper = _LastHidden(model, self.input_names).eval()
        example = tuple(torch.from_numpy(a) for a in _probe_inputs(self.input_names, 2, 16, pad_last=True))
        axes = {name: {0: "rows", 1: "width"} for name in (*self.input_names, "token_embeddings")}
        started = time.perf_counter()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
                torch.onnx.export(wrapper, example, str(tmp), input_names=list(self.input_names),
                                  output_names=["token_embeddings"], dynamic_axes=axes, opset_version=OPSET,
                                  dynamo=False)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.exported = True
        log.info("exported %s to ONNX in %.1f s: %s", type(model).__name__, time.perf_counter() - started, self.path)

    def _session(self):  # -> onnxruntime.InferenceSession
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.enable_mem_pattern = False  # planned per input shape, and every query has its own length
        # Spinning workers would keep the cores busy after a query, beside torch's next batch; waking
        # a worker per run costs less than that.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _open(self, model: nn.Module):
        if not self.path.is_file():
            self._export(model)
        try:
            session = self._session()
        except Exception as exc:  # a truncated or foreign file under our name: export it again
            log.warning("cached ONNX export %s does not load (%s); exporting again", self.path, exc)
            self.path.unlink(missing_ok=True)
            self._export(model)
            session = self._session()
        self._check(model, session)
        return session

    def _check(self, model: nn.Module, session) -> None:
        """The export must match torch on a shape it was not traced at, padding included."""
        inputs = _probe_inputs(self.input_names, 3, 23, pad_last=True)
        got = session.run(None, dict(zip(self.input_names, inputs, strict=True)))[0]
        with torch.no_grad():
            want = _LastHidden(model, self.input_names)(*(torch.from_numpy(a) for a in inputs)).float().numpy()
        real = inputs[self.input_names.index("attention_mask")].astype(bool) if "attention_mask" in \
            self.input_names else np.ones(got.shape[:2], dtype=bool)
        if got.shape != want.shape or not np.allclose(got[real], want[real], atol=EXPORT_CHECK_ATOL):
            self.path.unlink(missing_ok=True)
            raise OnnxUnavailable(f"the ONNX export of {type(model).__name__} does not match torch; not used")

    # -- inference -----------------------------------------------------------------------------
    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token embeddings (rows, width, hidden) in float32 for int64 ids and attention mask."""
        by_name = {"input_ids": ids, "attention_mask": mask}
        feed = {name: by_name.get(name, np.zeros_like(ids)) for name in self.input_names}
        return self.session.run(None, feed)[0]


def crossover_tokens(torch_run: Callable[[int], object], onnx_run: Callable[[int], object],
                     lengths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512), reps: int = 5,
                     margin: float = 0.9) -> int:
    """The longest one-row input, up the ladder, on which ONNX Runtime clearly beats torch (0: none).

    Each callable runs one row of the given length. Both are timed by their best of `reps` runs
    (the least disturbed); ONNX Runtime must take at most `margin` of torch's time to count as a win,
    so a tie stays on torch. The ladder stops at the first length it loses: longer inputs only tilt
    further towards torch, whose attention scales better with length.
    """
    def best(fn: Callable[[int], object], length: int) -> float:
        fn(length)  # first call at a shape allocates
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            fn(length)
            times.append(time.perf_counter() - started)
        return min(times)

    limit = 0
    for length in lengths:
        if best(onnx_run, length) > margin * best(torch_run, length):
            break
        limit = length
    return limit
