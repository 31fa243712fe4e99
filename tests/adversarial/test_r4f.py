"""R4F: R3F plus a spectrally normalised classification head (power iteration, persistent u)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.errors import UserError
from llama_adv.tasks import build_task
from llama_adv.train.mesh import replicated


def _head(params):
    return np.asarray(params["classifier"]["kernel"], np.float64)


def test_head_spectral_norm_is_one_after_normalisation(tiny):
    method = tiny.method("r4f")
    state, run, _, mesh = tiny.trainer(method)
    head = {**state.params["classifier"], "kernel": 4.0 * state.params["classifier"]["kernel"]}
    params = jax.device_put({**state.params, "classifier": head}, replicated(mesh))
    state = state.replace(params=params)
    assert abs(np.linalg.norm(_head(state.params), 2) - 1) > 1.0  # far from normalised
    for index in range(3):
        state, metrics = run(state, tiny.batch(8, 8 * index), index)
        assert abs(np.linalg.norm(_head(state.params), 2) - 1) < 1e-3
        assert np.isfinite(float(metrics["loss"])) and "head_sigma" in metrics
    assert state.method_state["u"].shape == (2,)


def _loss(tiny, method, params, scale):
    head = {**params["classifier"], "kernel": params["classifier"]["kernel"] * scale}
    params = {**params, "classifier": head}
    objective, info = tiny.setup(params, tiny.batch(8))

    def descend(p, o, g):
        return p, o, jnp.zeros(())

    state = method.init_state(params, 64)
    _, _, metrics, _ = method.update(
        objective, params, None, info, jax.random.key(0), state, descend
    )
    return float(metrics["loss_clean"])


def test_training_forward_sees_the_normalised_head(tiny):
    """W / sigma(W) does not depend on the scale of W: neither does R4F's loss (R3F's does)."""
    params = tiny.params()
    r4f, r3f = tiny.method("r4f"), tiny.method("random")
    np.testing.assert_allclose(
        _loss(tiny, r4f, params, 5.0), _loss(tiny, r4f, params, 1.0), rtol=1e-4
    )
    assert abs(_loss(tiny, r3f, params, 5.0) - _loss(tiny, r3f, params, 1.0)) > 1e-3


def test_r4f_needs_a_classification_head(tiny):
    with pytest.raises(UserError, match="classification"):
        tiny.method("r4f").__class__(tiny.adv(method="r4f"), build_task("seq2seq"))
    with pytest.raises(UserError, match=r"adv\.r4f\.head='nowhere'"):
        tiny.method("r4f", r4f__head="nowhere").init_state(tiny.params(), 8)
