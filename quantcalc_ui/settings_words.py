"""The app's settings and data source in words, for a report a reviewer reads.

Input is the app's settings as a plain mapping (``QuantCalcSettings.settings_dict()``: parameter name ->
value). Output is a list of ``(label, value)`` pairs showing only what applies to the schemes compared:

* integer settings (bits, mapping, range, rounding, convention, scale storage) only when an integer
  granularity (per-tensor / per-channel / per-group) is compared -- GGUF and float formats fix their own;
* the percentile only with the percentile range, custom bounds only with the custom range, the symmetric
  scale rule only with the symmetric mapping, the stochastic-rounding seed only with stochastic rounding,
  narrow / reduce range only when set;
* nothing about the data source (example, synthetic generator, upload): that is :func:`source_words`, which
  names only the fields of the source actually used.

Every value is plain text (untrusted names included); renderers escape or transliterate it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

INTEGER_GRANULARITIES = ("per-tensor", "per-channel", "per-group")

ROUNDING_WORDS = {
    "half-even": "half to even",
    "half-away": "half away from zero",
    "floor": "floor (toward -inf)",
    "ceil": "ceiling (toward +inf)",
    "trunc": "truncate (toward zero)",
    "stochastic": "stochastic",
}

# What decides the last bit under each convention (quantcore.conventions states the exact arithmetic).
CONVENTION_WORDS = {
    "float64": "float64 (textbook: float64, round(x/s + zp))",
    "torch": "torch (float32, x·(1/s)+zp, one FMA per tensor)",
    "torch-fake": "torch-fake (float32, round(x·(1/s)) + zp, as torch.fake_quantize)",
    "torchao": "torchao (float32, round(x·(1/s)) + zp, scale floor 2^-126)",
    "gguf": "gguf (float32, x·(1/s), fp16 scales, as llama.cpp)",
    "onnx": "onnx (float32, round(x/s) + zp, saturating to the storage type, as ONNX Runtime)",
    "matmulnbits": "matmulnbits (float32, round(x·(1/s) + zp), as ONNX Runtime MatMulNBits)",
}

SYMMETRIC_SCALE_WORDS = {
    "qmax": "max|x| / qmax",
    "half_range": "max|x| / ((qmax - qmin) / 2)",
    "max_abs_q": "max|x| / max(|qmin|, |qmax|)",
    "signed_amax": "largest-magnitude value (with its sign) / qmin",
}

RANGE_WORDS = {
    "minmax": "data min/max",
    "mse": "MSE-optimal clipping (searched per block)",
    "kl": "KL-divergence calibration (histogram of each block)",
}

MAX_LISTED_BOUNDS = 4   # a per-channel custom range lists this many numbers, then says how many there are


def _convention_defaults(convention: str) -> tuple[str | None, str | None]:
    """(default rounding, default symmetric scale rule) of a named convention; (None, None) if unknown."""
    from quantcore.conventions import CONVENTIONS
    conv = CONVENTIONS.get(convention)
    return (conv.rounding, conv.symmetric_scale) if conv is not None else (None, None)


def compared_schemes(settings: Mapping[str, object]) -> list[str]:
    """The scheme names the app analyses: the compared ones, then the detailed one if it is not among them."""
    names = [str(s) for s in (settings.get("compare") or [])]
    detail = settings.get("detail")
    if detail and str(detail) not in names:
        names.append(str(detail))
    return list(dict.fromkeys(names))


def scheme_words(name: str, settings: Mapping[str, object]) -> str:
    """One scheme name as a reviewer reads it: ``per-group 128``, ``Q4_0 (GGUF)``, ``nvfp4 (float)``
    (the kind read from :data:`quantcore.presets.PRESETS`)."""
    if name == "per-group":
        return f"per-group {settings.get('group', '?')}"
    if name in INTEGER_GRANULARITIES:
        return name
    from quantcore.presets import PRESETS
    spec = PRESETS.get(name.lower())   # one table of named schemes (mxfp4 is the GGUF type)
    if spec is None:
        return name
    if spec.kind == "gguf":
        return f"{spec.label} (GGUF)"
    if spec.kind == "float":
        return f"{name} (float)"
    return spec.label                  # integer runtime schemes carry a display name (MatMulNBits ...)


def _number_list(text: object) -> str:
    """Custom bounds as typed (one number, or one per channel), shortened when long."""
    parts = [p for p in str(text).replace(";", ",").replace(",", " ").split() if p]
    if len(parts) <= MAX_LISTED_BOUNDS:
        return ", ".join(parts) if parts else "(empty)"
    return ", ".join(parts[:MAX_LISTED_BOUNDS]) + f", ... ({len(parts)} values)"


def range_words(settings: Mapping[str, object]) -> str:
    method = str(settings.get("range_method", "minmax"))
    if method == "percentile":
        pct = float(settings.get("pct", 99.9))  # type: ignore[arg-type]
        return f"percentiles {100.0 - pct:g} and {pct:g} of each block"
    if method == "custom":
        return f"custom: min {_number_list(settings.get('lo', ''))}; max {_number_list(settings.get('hi', ''))}"
    return RANGE_WORDS.get(method, method)


def rounding_words(settings: Mapping[str, object]) -> str:
    rounding = str(settings.get("rounding", "default"))
    default = rounding == "default"
    if default:
        rounding = _convention_defaults(str(settings.get("convention", "float64")))[0] or "default"
    words = ROUNDING_WORDS.get(rounding, rounding)
    if rounding == "stochastic":
        words += f", seed {settings.get('seed', 0)}"
    return words + (" (convention default)" if default else "")


def mapping_words(settings: Mapping[str, object]) -> str:
    mapping = str(settings.get("mapping", "symmetric"))
    if mapping == "symmetric":
        signed = bool(settings.get("signed", True))
        return "symmetric, zero-point 0" if signed else "symmetric, zero-point at mid-range (unsigned codes)"
    if mapping == "affine":
        return "affine (asymmetric), integer zero-point"
    if mapping == "affine_float":
        return "affine with float offset (x = min + scale·q)"
    return mapping


def symmetric_scale_words(settings: Mapping[str, object]) -> str:
    rule = str(settings.get("symmetric_scale", "default"))
    default = rule == "default"
    if default:
        rule = _convention_defaults(str(settings.get("convention", "float64")))[1] or "default"
    return SYMMETRIC_SCALE_WORDS.get(rule, rule) + (" (convention default)" if default else "")


def _format_words(settings: Mapping[str, object]) -> list[tuple[str, str]]:
    """Bits, signedness and the range flags that are set."""
    words = [("Bits", str(settings.get("bits", "?"))),
             ("Codes", "signed" if settings.get("signed", True) else "unsigned")]
    if settings.get("narrow"):
        words.append(("Narrow range", "yes: the most negative code is not used"))
    if settings.get("reduce_range"):
        words.append(("Reduce range", "yes: one bit less (PyTorch fbgemm)"))
    if settings.get("qmin") is not None and settings.get("qmax") is not None:
        words.append(("Code range", f"custom [{settings['qmin']}, {settings['qmax']}]"))
    return words


def _convention_row(settings: Mapping[str, object]) -> tuple[str, str]:
    conv = str(settings.get("convention", "float64"))
    return ("Arithmetic convention", CONVENTION_WORDS.get(conv, conv))


def settings_words(settings: Mapping[str, object]) -> list[tuple[str, str]]:
    """The settings that apply, as ``(label, value)`` pairs in reading order (see the module docstring)."""
    if settings.get("source") == "manual":
        return [("Parameters", "scale and zero-point given per channel (manual mode)"),
                *_format_words(settings), ("Rounding", rounding_words(settings)), _convention_row(settings)]
    schemes = compared_schemes(settings)
    integer = [s for s in schemes if s in INTEGER_GRANULARITIES]
    fixed = [s for s in schemes if s not in INTEGER_GRANULARITIES]
    words: list[tuple[str, str]] = []
    if integer:
        words.append(("Granularity compared", ", ".join(scheme_words(s, settings) for s in integer)))
    if fixed:
        words.append(("Fixed formats compared", ", ".join(scheme_words(s, settings) for s in fixed)))
    if settings.get("detail"):
        words.append(("Shown in detail", scheme_words(str(settings["detail"]), settings)))
    words.append(("Channel axis", str(settings.get("axis", 0))))
    if settings.get("budget") is not None:
        words.append(("Budget", f"{float(settings['budget']):g} bits per weight (payload + scales/zero-points)"))
    if not integer:
        return words
    words += _format_words(settings)
    words.append(("Mapping", mapping_words(settings)))
    if settings.get("mapping", "symmetric") == "symmetric":
        words.append(("Symmetric scale", symmetric_scale_words(settings)))
    words.append(("Range", range_words(settings)))
    words.append(("Rounding", rounding_words(settings)))
    words.append(_convention_row(settings))
    words.append(("Scale stored as", str(settings.get("scale_dtype", "fp32"))))
    zp = str(settings.get("zero_point_dtype", "int32"))
    words.append(("Zero-point stored as", "not stored" if zp == "none" else zp))
    if fixed:
        words.append(("Note", "the integer settings above do not apply to the fixed formats, which define "
                              "their own bits, scales, rounding and arithmetic"))
    return words


def _shape_words(shape: Sequence[int]) -> str:
    return "×".join(str(int(d)) for d in shape)


def source_words(settings: Mapping[str, object], *, filename: str = "", tensor: str = "", dtype: str = "",
                 shape: Sequence[int] | None = None, channel_lengths: Sequence[int] | None = None,
                 manual_rows: int | None = None) -> str:
    """Where the data came from, in words, naming only the fields of the source used.

    ``shape``/``dtype``: of the tensor analysed (``dtype`` as stored in the file, for uploads);
    ``channel_lengths``: the lengths of ragged pasted channels; ``manual_rows``: rows in manual mode.
    Examples: ``uploaded file model.safetensors, tensor model.layers.0.q_proj.weight, float16 4096×4096``,
    ``built-in example s1 (seed 001): ...``, ``synthetic normal 64×256, seed 0``.
    """
    source = str(settings.get("source", ""))
    if source == "example":
        key = str(settings.get("example", ""))
        words = f"built-in example {key}"
        if key[1:].isdigit():
            words += f" (seed {int(key[1:]):03d})"
        try:
            from quantcore.examples import get_example
            words += f": {get_example(key).title}"
        except ValueError:
            pass
        return words
    if source == "synthetic":
        rows, cols = settings.get("syn_rows", "?"), settings.get("syn_cols", "?")
        words = f"synthetic {settings.get('syn_dist', 'normal')} {rows}×{cols}, seed {settings.get('syn_seed', 0)}"
        spread = float(settings.get("syn_spread", 0.0) or 0.0)  # type: ignore[arg-type]
        if spread:
            words += f", channel-scale spread {spread:g}"
        outliers = int(settings.get("syn_outliers", 0) or 0)  # type: ignore[arg-type]
        if outliers:
            words += f", {outliers} outlier channel{'s' if outliers != 1 else ''}"
        return words
    if source == "upload":
        parts = [f"uploaded file {filename}" if filename else "uploaded file"]
        if tensor and tensor != filename:
            parts.append(f"tensor {tensor}")
        kind = " ".join(p for p in (dtype, _shape_words(shape) if shape else "") if p)
        if kind:
            parts.append(kind)
        return ", ".join(parts)
    if source == "paste":
        if channel_lengths and len(set(channel_lengths)) > 1:
            return (f"pasted values, {len(channel_lengths)} channels of {min(channel_lengths)} to "
                    f"{max(channel_lengths)} values")
        return f"pasted values, {_shape_words(shape)}" if shape else "pasted values"
    if source == "manual":
        return f"manual parameters, {manual_rows} row{'s' if manual_rows != 1 else ''}" if manual_rows \
            else "manual parameters"
    return source or "unknown source"
