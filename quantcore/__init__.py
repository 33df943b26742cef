"""quantcore: an exact, vectorized quantization engine (numpy only; runs unchanged in Pyodide).

A scheme is a value, :class:`QuantSpec` = element x granularity x scale rule x convention
(:mod:`quantcore.spec`); named schemes are one table, :data:`PRESETS` (:mod:`quantcore.presets`).
:func:`analyze` runs any scheme on a tensor and returns a :class:`QuantResult` (:func:`analyze_steps`: the
same in steps a caller can stop, :mod:`quantcore.steps`); :mod:`quantcore.report` compares, sweeps and exports. Each module's docstring states the formulas it implements.
"""
from . import report, steps
from .analysis import QuantResult, analyze, analyze_steps
from .conventions import CONVENTIONS, ROUNDINGS
from .elements import GGUFType
from .examples import EXAMPLES, get_example, synthetic
from .floatfmt import E2M1, E2M3, E3M2, E4M3FN, E5M2, E8M0, NF4, Codebook, FloatFormat
from .formats import IntFormat
from .ggml import BLOCK_FORMATS
from .granularity import PerBlock, PerChannel, PerGroup, PerTensor
from .memory import Memory, memory_estimate
from .metrics import Metrics
from .params import MAPPINGS, CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile
from .presets import PRESETS, preset, preset_names
from .report import Comparison, compare, manual, standard_schemes, sweep
from .scales import AbsMax, GGUFScales, IntScale, PowerOfTwo, StdScale, TwoLevel
from .spec import QuantSpec

__all__ = [
    "AbsMax", "BLOCK_FORMATS", "CONVENTIONS", "Codebook", "Comparison", "CustomRange", "E2M1", "E2M3", "E3M2",
    "E4M3FN", "E5M2", "E8M0", "EXAMPLES", "FloatFormat", "GGUFScales", "GGUFType", "IntFormat", "IntScale",
    "KLDivergence", "MAPPINGS", "MSEOptimal", "Memory", "Metrics", "MinMax", "NF4", "PRESETS", "PerBlock",
    "PerChannel", "PerGroup", "PerTensor", "Percentile", "PowerOfTwo", "QuantResult", "QuantSpec", "ROUNDINGS",
    "StdScale", "TwoLevel", "analyze", "analyze_steps", "compare", "get_example", "manual", "memory_estimate", "preset",
    "preset_names", "report", "standard_schemes", "steps", "sweep", "synthetic",
]
__version__ = "0.1.0"
