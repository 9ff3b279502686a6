"""TempScale: a temperature in the encoder's attention softmax, against length-induced collapse.

Self-attention averages token features like a low-pass filter, and the longer the input, the
stronger the averaging: embeddings of long texts crowd into a narrow cone and stop being
comparable with short ones (Zhou et al., "Length-Induced Embedding Collapse in Transformer-based
Models"). Dividing every attention logit by a temperature tau < 1 sharpens the attention rows and
keeps more of each token's own signal. It needs no training: the logit scale is a number the
attention modules already hold (`scaling`, 1/sqrt(head_dim) for BERT-style encoders), so the model
runs unchanged through whatever attention backend transformers picked (SDPA, eager, ours).

tau = 1 is the model as trained; an operator opts in per deployment. The vectors change, so the
embedding space is named with tau (`space_id`) wherever vectors are stored.
"""

from __future__ import annotations

import math

from torch import nn

_BASE_ATTR = "_rrs_base_scaling"
_TAG = "+tempscale="


def space_id(model: str, temperature: float) -> str:
    """The name of the vector space a (model, tau) pair embeds into; the plain name at tau = 1."""
    return model if temperature == 1.0 else f"{model}{_TAG}{temperature:g}"


def split_space(space: str) -> tuple[str, float]:
    """(model name, temperature) of a vector-space name written by `space_id`."""
    model, sep, tag = space.rpartition(_TAG)
    if sep:
        try:
            return model, check_temperature(float(tag))
        except ValueError:
            pass
    return space, 1.0


def check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"attention temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules that take their logit scale from a `scaling` attribute."""
    found = []
    for module in model.modules():
        scale = getattr(module, "scaling", None)
        if "Attention" in type(module).__name__ and isinstance(scale, float) and scale > 0:
            if getattr(module, "is_cross_attention", False):
                continue
            found.append(module)
    return found


def apply_attention_temperature(model: nn.Module, temperature: float) -> int:
    """Set every self-attention module's logit scale to (trained scale) / temperature.

    Idempotent and reversible (the trained scale is kept beside it), so applying 1.0 restores the
    model. Returns how many modules were changed; a model whose attention keeps its scale anywhere
    else is refused rather than silently left as trained.
    """
    temperature = check_temperature(temperature)
    modules = _attention_modules(model)
    if not modules:
        if temperature == 1.0:
            return 0
        raise ValueError(
            f"attention temperature: {type(model).__name__} has no attention module with a `scaling` "
            "logit scale, so TempScale cannot be applied to it"
        )
    for module in modules:
        base = getattr(module, _BASE_ATTR, None)
        if base is None:
            base = float(module.scaling)
            setattr(module, _BASE_ATTR, base)
        module.scaling = base / temperature
    return len(modules)
