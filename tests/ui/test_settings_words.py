"""The app's settings in words: only what applies to the schemes compared and the data source used."""
from __future__ import annotations

import pytest

import quantcore as qc
from quantcalc_ui.settings_words import compared_schemes, settings_words, source_words

from uimodels import base_settings


def words(**changes) -> dict[str, str]:
    pairs = settings_words(base_settings(**changes))
    labels = [k for k, _ in pairs]
    assert len(labels) == len(set(labels)), f"a label repeats: {labels}"
    return dict(pairs)


def everything(d: dict[str, str]) -> str:
    return " | ".join(f"{k}: {v}" for k, v in d.items())


def test_brief_examples_read_as_words():
    d = words(bits=4, compare=["per-tensor", "per-channel", "per-group"], group=128, convention="torch")
    assert d["Bits"] == "4"
    assert d["Mapping"] == "symmetric, zero-point 0"
    assert d["Granularity compared"] == "per-tensor, per-channel, per-group 128"
    assert d["Range"] == "data min/max"
    assert d["Rounding"] == "half to even (convention default)"
    assert d["Arithmetic convention"] == "torch (float32, x·(1/s)+zp, one FMA per tensor)"


def test_no_parameter_dump_and_no_source_fields():
    """The old report printed 'syn_rows=64 ...' even for an uploaded file: no parameter names, no source."""
    for source in ("upload", "example", "paste", "synthetic"):
        text = everything(words(source=source, syn_rows=4093, syn_cols=97, syn_seed=5113))
        for raw in ("syn_", "range_method", "zero_point_dtype", "=", "4093", "97", "5113", "ynthetic", "xample"):
            assert raw not in text, (source, raw, text)


def test_percentile_only_with_the_percentile_range():
    assert "99.9" not in everything(words(range_method="minmax", pct=99.9))
    assert words(range_method="percentile", pct=99.9)["Range"] == "percentiles 0.1 and 99.9 of each block"


def test_custom_bounds_only_with_the_custom_range_and_shortened():
    assert "-1.5" not in everything(words(range_method="mse", lo="-1.5", hi="1.5"))
    assert words(range_method="custom", lo="-1.5", hi="1.5")["Range"] == "custom: min -1.5; max 1.5"
    many = ", ".join(str(-i) for i in range(1, 101))
    r = words(range_method="custom", lo=many, hi=many.replace("-", ""))["Range"]
    assert r == "custom: min -1, -2, -3, -4, ... (100 values); max 1, 2, 3, 4, ... (100 values)"


def test_stochastic_seed_only_with_stochastic_rounding():
    assert "seed" not in everything(words(rounding="half-away", seed=7))
    assert "7" not in everything(words(rounding="default", seed=7))
    assert words(rounding="stochastic", seed=7)["Rounding"] == "stochastic, seed 7"


@pytest.mark.parametrize("convention, rounding", [("float64", "half to even"), ("torch", "half to even"),
                                                  ("gguf", "half away from zero"),
                                                  ("matmulnbits", "half away from zero")])
def test_default_rounding_is_the_conventions(convention, rounding):
    # quantcore.conventions: llama.cpp and MLAS round half away from zero (roundf); the others rint
    assert words(convention=convention)["Rounding"] == f"{rounding} (convention default)"
    assert words(convention=convention, rounding="floor")["Rounding"] == "floor (toward -inf)"


def test_symmetric_scale_rule_only_for_the_symmetric_mapping():
    assert "Symmetric scale" not in words(mapping="affine")
    # PyTorch's observers: scale = max|x| / ((qmax - qmin) / 2); the textbook (seed 002): max|x| / qmax
    assert words(convention="torch")["Symmetric scale"] == "max|x| / ((qmax - qmin) / 2) (convention default)"
    assert words(convention="float64")["Symmetric scale"] == "max|x| / qmax (convention default)"
    assert words(symmetric_scale="max_abs_q")["Symmetric scale"] == "max|x| / max(|qmin|, |qmax|)"


def test_mapping_words():
    assert words(mapping="affine")["Mapping"] == "affine (asymmetric), integer zero-point"
    assert words(mapping="affine_float")["Mapping"] == "affine with float offset (x = min + scale·q)"
    assert words(signed=False)["Mapping"] == "symmetric, zero-point at mid-range (unsigned codes)"


def test_narrow_and_reduce_range_only_when_set():
    d = words()
    assert "Narrow range" not in d and "Reduce range" not in d
    d = words(narrow=True, reduce_range=True)
    assert d["Narrow range"].startswith("yes") and d["Reduce range"].startswith("yes")


def test_fixed_formats_alone_have_no_integer_settings():
    d = words(compare=["q4_0", "nvfp4"], detail="q4_0", bits=4, rounding="stochastic", seed=3)
    assert d["Fixed formats compared"] == "Q4_0 (GGUF), nvfp4 (float)"
    assert d["Shown in detail"] == "Q4_0 (GGUF)"
    for integer_only in ("Bits", "Codes", "Mapping", "Range", "Rounding", "Arithmetic convention", "Scale stored as",
                         "Granularity compared", "Note"):
        assert integer_only not in d, integer_only


def test_mixed_schemes_say_the_integer_settings_do_not_apply_to_fixed_formats():
    d = words(compare=["per-channel", "q8_0", "mxfp4"])
    assert d["Granularity compared"] == "per-channel"
    assert d["Fixed formats compared"] == "Q8_0 (GGUF), MXFP4 (GGUF)"   # the app resolves mxfp4 as GGUF first
    assert "do not apply to the fixed formats" in d["Note"]


def test_detail_is_analysed_even_when_not_compared():
    s = base_settings(compare=["per-tensor"], detail="per-group", group=64)
    assert compared_schemes(s) == ["per-tensor", "per-group"]
    assert dict(settings_words(s))["Granularity compared"] == "per-tensor, per-group 64"


def test_every_convention_has_words():
    for name in qc.CONVENTIONS:
        text = words(convention=name)["Arithmetic convention"]
        assert text.startswith(f"{name} (") and text.endswith(")"), text


def test_manual_mode_has_no_scheme_settings():
    d = words(source="manual", bits=4, rounding="stochastic", seed=11)
    assert d["Parameters"] == "scale and zero-point given per channel (manual mode)"
    assert d["Rounding"] == "stochastic, seed 11"
    for absent in ("Granularity compared", "Shown in detail", "Mapping", "Range", "Scale stored as", "Channel axis"):
        assert absent not in d, absent


def test_zero_point_storage_words():
    assert words(zero_point_dtype="none")["Zero-point stored as"] == "not stored"
    assert words(zero_point_dtype="int8")["Zero-point stored as"] == "int8"


# --- the data source ----------------------------------------------------------------------------

def test_upload_source_names_file_tensor_dtype_and_shape_only():
    s = base_settings(source="upload", syn_rows=64, syn_cols=256)
    text = source_words(s, filename="model.safetensors", tensor="model.layers.0.q_proj.weight", dtype="float16",
                        shape=(4096, 4096))
    assert text == "uploaded file model.safetensors, tensor model.layers.0.q_proj.weight, float16 4096×4096"


def test_example_source_names_the_seed():
    text = source_words(base_settings(source="example", example="s1"))
    assert text.startswith("built-in example s1 (seed 001): ")
    assert qc.get_example("s1").title in text


def test_synthetic_source_names_only_what_was_set():
    s = base_settings(source="synthetic", syn_rows=64, syn_cols=256, syn_seed=0, syn_spread=0.0, syn_outliers=0)
    assert source_words(s) == "synthetic normal 64×256, seed 0"
    s.update(syn_spread=1.5, syn_outliers=1, syn_dist="laplace")
    assert source_words(s) == "synthetic laplace 64×256, seed 0, channel-scale spread 1.5, 1 outlier channel"


def test_paste_and_manual_sources():
    assert source_words(base_settings(source="paste"), shape=(2, 4)) == "pasted values, 2×4"
    assert source_words(base_settings(source="paste"), channel_lengths=[3, 5, 4]) == \
        "pasted values, 3 channels of 3 to 5 values"
    assert source_words(base_settings(source="manual"), manual_rows=1) == "manual parameters, 1 row"


def test_budget_and_custom_code_range_are_said_when_set():
    from quantcalc_ui.settings_words import settings_words
    base = {"source": "example", "example": "s3", "compare": ["per-tensor", "per-channel"], "detail": "per-channel",
            "bits": 4, "signed": True, "mapping": "symmetric", "range_method": "minmax", "convention": "float64",
            "rounding": "default", "symmetric_scale": "default", "scale_dtype": "fp32", "zero_point_dtype": "int32",
            "axis": 0}
    plain = dict(settings_words(base))
    assert "Budget" not in plain and "Code range" not in plain
    words = dict(settings_words({**base, "budget": 4.5, "qmin": -7, "qmax": 7}))
    assert words["Budget"].startswith("4.5 bits per weight") and words["Code range"] == "custom [-7, 7]"
