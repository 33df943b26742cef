"""quantcore: an exact, vectorized quantization engine (numpy only; runs unchanged in Pyodide).

See :mod:`quantcore.analysis` for the entry point :func:`analyze`, :mod:`quantcore.report` for
comparisons, sweeps and exports, and each module's docstring for the formulas it implements.
"""
from . import report
from .analysis import QuantResult, analyze
from .ggml import BLOCK_FORMATS
from .conventions import CONVENTIONS, ROUNDINGS
from .examples import EXAMPLES, get_example, synthetic
from .formats import IntFormat
from .granularity import PerChannel, PerGroup, PerTensor
from .memory import Memory, memory_estimate
from .metrics import Metrics
from .params import MAPPINGS, CustomRange, KLDivergence, MinMax, MSEOptimal, Percentile
from .report import Comparison, compare, manual, standard_schemes, sweep
from .microscaling import FloatScheme
from .spec import FLOAT_SCHEMES, SCHEME_PRESETS, QuantSpec, float_spec, preset, preset_names

__all__ = [
    "BLOCK_FORMATS", "CONVENTIONS", "FLOAT_SCHEMES", "FloatScheme", "float_spec", "Comparison", "CustomRange", "EXAMPLES", "IntFormat", "KLDivergence",
    "MAPPINGS", "MSEOptimal", "Memory", "Metrics", "MinMax", "PerChannel", "PerGroup", "PerTensor", "Percentile",
    "QuantResult", "QuantSpec", "ROUNDINGS", "analyze", "compare", "get_example", "manual", "memory_estimate",
    "preset", "preset_names", "report", "SCHEME_PRESETS", "standard_schemes", "sweep", "synthetic",
]
__version__ = "0.1.0"
