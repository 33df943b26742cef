"""Session fixtures: report models of the four examples and of a 4096 x 256 tensor, and their PDFs."""
from __future__ import annotations

import pytest

from uimodels import big_model, example_model


@pytest.fixture(scope="session")
def example_models():
    return {key: example_model(key) for key in ("s0", "s1", "s2", "s3")}


@pytest.fixture(scope="session")
def big():
    return big_model()


@pytest.fixture(scope="session")
def rendered(example_models, big):
    """PDF bytes of the four examples and of the 4096 x 256 tensor."""
    from quantcalc_ui.pdf import render_pdf
    out = {key: render_pdf(model) for key, (model, _) in example_models.items()}
    out["big"] = render_pdf(big[0])
    return out
