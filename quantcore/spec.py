"""The scheme model: one quantization scheme as a frozen value.

A scheme is **element x granularity x scale rule x convention**, plus the storage dtypes of scales and
zero-points:

``element``           what one value can be (:mod:`quantcore.elements`): ``IntFormat``, a ``FloatFormat``
                      (FP8 / FP6 / FP4), a ``Codebook`` (NF4), or a ``GGUFType``;
``granularity``       which elements share a scale (:mod:`quantcore.granularity`): ``PerTensor``,
                      ``PerChannel``, ``PerGroup``, ``PerBlock``;
``scale_rule``        how a block's scale follows from its reductions (:mod:`quantcore.scales`):
                      ``IntScale`` (with its mapping and range method), ``AbsMax``, ``StdScale``,
                      ``PowerOfTwo`` (E8M0), ``TwoLevel`` (NVFP4), ``GGUFScales``;
``convention``        the arithmetic that decides the last bit, from the rule's menu
                      (``rule.conventions``): the integer conventions of :mod:`quantcore.conventions`,
                      ``divide``/``reciprocal`` (absmax), ``ocp``/``torchao`` (E8M0), ``modelopt``/``torchao``
                      (NVFP4), ``gguf``;
``scale_dtype``,      how scales and zero-points are stored (memory; fp16 / bf16 / E4M3 scales are also
``zero_point_dtype``  rounded before quantizing);
``rounding``, ``seed``  integer elements' rounding rule (None: the convention's) and stochastic seed;
``name``              display name of a named scheme (:mod:`quantcore.presets`); changes only the label.

Every combination is checked when the spec is built: what makes no sense (a zero-point on a float
element, E8M0 scales on integers, a GGUF type with another granularity, a convention of another rule)
raises ValueError saying why. Defaults follow the element: integers get ``IntScale()`` and the
``float64`` convention, float elements ``AbsMax()``, GGUF types their own blocks and scales.

Backward-compatible construction: ``QuantSpec(fmt=IntFormat(4), mapping="symmetric", range=MinMax(),
symmetric_scale=None, ...)`` builds ``element=IntFormat(4), scale_rule=IntScale("symmetric", ...)``; the
same keywords work in :meth:`QuantSpec.with_`, and ``spec.fmt``, ``spec.mapping``, ``spec.range``,
``spec.symmetric_scale`` read them back (AttributeError for non-integer schemes).

:meth:`QuantSpec.to_dict` / :meth:`QuantSpec.from_dict` round-trip exactly (through JSON too).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from .conventions import ROUNDINGS, get_convention
from .elements import Element, GGUFType, is_float_element
from .floatfmt import Codebook, FloatFormat
from .formats import IntFormat
from .granularity import GRANULARITIES, Granularity, PerBlock, PerChannel, PerGroup, PerTensor
from .memory import DTYPE_BITS, Memory, block_memory, memory_estimate
from .params import CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile, RangeMethod
from .scales import SCALE_RULES, AbsMax, GGUFScales, IntScale, PowerOfTwo, ScaleRule, StdScale, TwoLevel

_LEGACY = ("fmt", "mapping", "range", "symmetric_scale")


@dataclass(frozen=True, init=False)
class QuantSpec:
    """One quantization scheme (module docstring). Build it with keywords; omitted parts take the
    element's defaults; the stored fields are always complete and validated."""

    element: Element
    granularity: Granularity
    scale_rule: ScaleRule
    convention: str
    rounding: str | None
    seed: int
    scale_dtype: str
    zero_point_dtype: str
    name: str | None

    def __init__(self, element: Element | None = None, granularity: Granularity | None = None,
                 scale_rule: ScaleRule | None = None, convention: str | None = None, rounding: str | None = None,
                 seed: int = 0, scale_dtype: str | None = None, zero_point_dtype: str | None = None,
                 name: str | None = None, *, fmt: IntFormat | None = None, mapping: str | None = None,
                 range: RangeMethod | None = None, symmetric_scale: str | None = None) -> None:
        if fmt is not None:
            if element is not None and element != fmt:
                raise ValueError("give the element either as element= or as fmt=, not both")
            element = fmt
        element = IntFormat() if element is None else element
        legacy = {k: v for k, v in (("mapping", mapping), ("range", range), ("symmetric_scale", symmetric_scale))
                  if v is not None}
        if legacy:
            if scale_rule is not None and not isinstance(scale_rule, IntScale):
                raise ValueError(f"{', '.join(legacy)} belong to the integer scale rule IntScale, not "
                                 f"{type(scale_rule).__name__}")
            scale_rule = replace(scale_rule or IntScale(), **legacy)
        if isinstance(element, GGUFType):
            t = element.type
            granularity = PerGroup(t.block_size, -1) if granularity is None else granularity
            scale_rule = GGUFScales() if scale_rule is None else scale_rule
            scale_dtype = scale_dtype or ("e8m0" if t.name == "MXFP4" else "fp16")
            zero_point_dtype = zero_point_dtype or ("fp16" if t.stores_min() else "none")
        elif scale_rule is None:
            scale_rule = AbsMax() if is_float_element(element) else IntScale()
        granularity = PerTensor() if granularity is None else granularity
        if isinstance(scale_rule, IntScale):
            convention = convention or "float64"
            zero_point_dtype = zero_point_dtype or "int32"
        elif isinstance(scale_rule, ScaleRule):
            convention = convention or scale_rule.conventions[0]
            zero_point_dtype = zero_point_dtype or scale_rule.zero_point_dtypes[0]
        if isinstance(scale_rule, ScaleRule):
            scale_dtype = scale_dtype or scale_rule.allowed_scale_dtypes[0]
        for k, v in (("element", element), ("granularity", granularity), ("scale_rule", scale_rule),
                     ("convention", convention), ("rounding", rounding), ("seed", seed),
                     ("scale_dtype", scale_dtype), ("zero_point_dtype", zero_point_dtype), ("name", name)):
            object.__setattr__(self, k, v)
        self._validate()

    def _validate(self) -> None:
        e, g, rule = self.element, self.granularity, self.scale_rule
        if not isinstance(e, (IntFormat, FloatFormat, Codebook, GGUFType)):
            raise ValueError(f"unknown element {e!r}: expected IntFormat, FloatFormat, Codebook or GGUFType")
        if not isinstance(g, GRANULARITIES):
            raise ValueError(f"unknown granularity {g!r}")
        if not isinstance(rule, SCALE_RULES):
            raise ValueError(f"unknown scale rule {rule!r}")
        if isinstance(e, GGUFType) and not isinstance(rule, GGUFScales):
            raise ValueError(f"{e.label} is a GGUF block type: it fixes its own scales (GGUFScales), not "
                             f"{type(rule).__name__}")
        rule.check(e, g)
        if isinstance(rule, IntScale):
            conv = get_convention(self.convention)  # validates the name
            if rule.mapping == "affine_float" and conv.qparams_rule != "observer":
                raise ValueError(f"the {self.convention} convention has integer zero-points: use mapping affine or "
                                 f"symmetric, not affine_float")
        elif self.convention not in rule.conventions:
            raise ValueError(f"convention {self.convention!r} does not apply to {rule.label} scales; expected one "
                             f"of {', '.join(rule.conventions)}")
        if self.rounding is not None and self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of {', '.join(ROUNDINGS)}")
        if self.rounding not in rule.roundings:
            what = "GGUF types round as llama.cpp does" if isinstance(rule, GGUFScales) else \
                "float elements round to nearest, ties to even (saturating)"
            raise ValueError(f"{what}: rounding {self.rounding!r} does not apply (leave it unset)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for what, dt in (("scale", self.scale_dtype), ("zero-point", self.zero_point_dtype)):
            if dt not in DTYPE_BITS:
                raise ValueError(f"unknown metadata dtype {dt!r}; expected one of {', '.join(DTYPE_BITS)}")
        if isinstance(rule, IntScale):
            if self.scale_dtype not in rule.scale_dtypes:
                raise ValueError(f"scale dtype must be fp32, fp16 or bf16, got {self.scale_dtype!r}")
        elif isinstance(rule, GGUFScales):
            t = e.type
            want = ("e8m0" if t.name == "MXFP4" else "fp16", "fp16" if t.stores_min() else "none")
            if (self.scale_dtype, self.zero_point_dtype) != want:
                raise ValueError(f"{t.name} fixes its metadata: scale dtype {want[0]}, zero-point dtype {want[1]} "
                                 f"(got {self.scale_dtype}, {self.zero_point_dtype})")
        else:
            if self.scale_dtype not in rule.allowed_scale_dtypes:
                raise ValueError(f"{rule.label} scales are stored as {' or '.join(rule.allowed_scale_dtypes)}, not "
                                 f"{self.scale_dtype!r}")
            if self.zero_point_dtype != "none":
                raise ValueError(f"float elements have no zero-point: zero_point_dtype must be 'none', got "
                                 f"{self.zero_point_dtype!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")

    # --- what kind of scheme --------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"int"``, ``"float"`` (float or codebook elements) or ``"gguf"``."""
        if isinstance(self.element, GGUFType):
            return "gguf"
        return "float" if is_float_element(self.element) else "int"

    @property
    def needs_tensor_range(self) -> bool:
        """True when a block's scale depends on the whole tensor's min / max / amax (per-tensor granularity,
        NVFP4's tensor scale): a part of the tensor is quantized as inside the whole only when given that
        range (``analyze(..., tensor_range=...)``)."""
        return isinstance(self.granularity, PerTensor) or self.scale_rule.needs_tensor_range

    # --- backward-compatible views of the integer scheme ----------------------------------------
    def _int_rule(self, what: str) -> IntScale:
        if not isinstance(self.scale_rule, IntScale):
            raise AttributeError(f"{self.label}: '{what}' belongs to integer schemes (IntScale); this scheme's "
                                 f"scale rule is {type(self.scale_rule).__name__}")
        return self.scale_rule

    @property
    def fmt(self) -> IntFormat:
        """The integer element (AttributeError for float and GGUF schemes)."""
        if not isinstance(self.element, IntFormat):
            raise AttributeError(f"{self.label}: its element {self.element.label} is not an integer format")
        return self.element

    @property
    def mapping(self) -> str:
        return self._int_rule("mapping").mapping

    @property
    def range(self) -> RangeMethod:
        return self._int_rule("range").range

    @property
    def symmetric_scale(self) -> str | None:
        return self._int_rule("symmetric_scale").symmetric_scale

    @property
    def effective_rounding(self) -> str:
        """The rounding rule in force: the given one, the convention's (integers), ``half-even`` (float
        elements, always), ``gguf`` (each GGUF type rounds as its C reference)."""
        if isinstance(self.scale_rule, IntScale):
            return self.rounding or get_convention(self.convention).rounding
        return "gguf" if isinstance(self.scale_rule, GGUFScales) else "half-even"

    @property
    def effective_symmetric_scale(self) -> str:
        return self._int_rule("symmetric_scale").effective_symmetric_scale(self.convention)

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        e, g, rule = self.element, self.granularity, self.scale_rule
        if isinstance(e, GGUFType):
            return e.label
        if isinstance(rule, IntScale):
            return f"{e.label} {rule.label} {g.label}"
        out = f"{e.label} {g.label}, {rule.label}"
        if self.convention != rule.conventions[0]:
            out += f" ({self.convention})"
        if self.scale_dtype != rule.allowed_scale_dtypes[0]:
            out += f", {self.scale_dtype} scales"
        return out

    def with_(self, **changes) -> "QuantSpec":
        """A copy with ``changes`` (model fields, or the legacy ``fmt``/``mapping``/``range``/``symmetric_scale``);
        it loses ``name`` (a changed preset is another scheme) unless given."""
        changes.setdefault("name", None)
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        legacy = {k: changes.pop(k) for k in _LEGACY if k in changes}
        if "fmt" in legacy:
            kw["element"] = legacy.pop("fmt")
        kw.update(changes)
        if legacy:
            rule = kw["scale_rule"]
            if not isinstance(rule, IntScale):
                raise ValueError(f"{', '.join(legacy)} belong to integer schemes (IntScale), not {self.label}")
            kw["scale_rule"] = replace(rule, **legacy)
        return QuantSpec(**kw)

    # --- memory ---------------------------------------------------------------------------------
    def memory(self, n_elements: int, n_blocks: int) -> Memory:
        """Bytes of ``n_elements`` values in ``n_blocks`` blocks stored in this scheme (:mod:`quantcore.memory`):
        GGUF types their exact block bytes, other schemes packed codes plus the rule's metadata bits."""
        if isinstance(self.element, GGUFType):
            t = self.element.type
            return block_memory(n_elements, n_blocks, t.type_size, t.meta_bytes, t.code_bits())
        meta = self.scale_rule.metadata_bits(n_blocks, self.scale_dtype, self.zero_point_dtype)
        return memory_estimate(n_elements, n_blocks, self.element.bits, "none", "none", extra_bits=meta)

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field as JSON-safe data; :meth:`from_dict` rebuilds an equal spec."""
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown QuantSpec field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: _decode(v) for k, v in d.items()})


# --- tagged (de)serialisation of the components ---------------------------------------------------
_KINDS: dict[str, type] = {
    "int": IntFormat, "float": FloatFormat, "codebook": Codebook, "gguf": GGUFType,
    "per-tensor": PerTensor, "per-channel": PerChannel, "per-group": PerGroup, "per-block": PerBlock,
    "int-scale": IntScale, "absmax": AbsMax, "onnx-std": StdScale, "pow2": PowerOfTwo, "two-level": TwoLevel,
    "gguf-scales": GGUFScales,
    "minmax": MinMax, "custom": CustomRange, "percentile": Percentile, "mse": MSEOptimal, "kl": KLDivergence,
}
_KIND_OF = {cls: k for k, cls in _KINDS.items()}


def _encode(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        kind = _KIND_OF.get(type(v))
        if kind is None:
            raise ValueError(f"cannot serialise {v!r}")
        return {"kind": kind, **{f.name: _encode(getattr(v, f.name)) for f in fields(v)}}
    if isinstance(v, (tuple, list)):
        return [_encode(x) for x in v]
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        kind = v.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(_KINDS)}")
        return _KINDS[kind](**{k: _decode(x) for k, x in v.items() if k != "kind"})
    if isinstance(v, list):
        return tuple(_decode(x) for x in v)
    return v
