"""adv.radius_unit = embedding_rms: radii and absolute step sizes scale with the embedding
table, so one config is the same threat on tables of any scale."""

import jax
import numpy as np
import pytest

from llama_adv.adversarial import geometry, validate_adv_config
from llama_adv.config import get_default_config
from llama_adv.errors import UserError

EPS = 0.05


def _scaled(params, c):
    return {**params, "embedding": {"embedding": params["embedding"]["embedding"] * c}}


def _fgm_norm(tiny, params, batch, **overrides):
    objective, info = tiny.setup(params, batch)
    method = tiny.method("fgm", epsilon=EPS, **overrides)
    clean = objective(params, {}, jax.random.key(0))[1]
    delta = method.attack(objective, params, info, jax.random.key(1), method.radius(info), clean)
    size = np.asarray(geometry.bounded_norms(delta, "l2", "example"))
    pgd = tiny.method("pgd", epsilon=EPS, step_size=0.01, **overrides)
    return size, float(pgd.step_size(pgd.radius(info), info)), float(info.embedding_rms)


@pytest.mark.parametrize("c", [0.1, 7.0])
def test_scaling_the_table_scales_the_radius_only_under_embedding_rms(tiny, c):
    params, batch = tiny.params(), tiny.batch(8)
    base, base_step, rms = _fgm_norm(tiny, params, batch, radius_unit="embedding_rms")
    np.testing.assert_allclose(base, EPS * rms, rtol=1e-5)  # eps times the RMS row norm
    np.testing.assert_allclose(base_step, 0.01 * rms, rtol=1e-5)
    scaled, scaled_step, _ = _fgm_norm(tiny, _scaled(params, c), batch, radius_unit="embedding_rms")
    np.testing.assert_allclose(scaled, c * base, rtol=1e-4)
    np.testing.assert_allclose(scaled_step, c * base_step, rtol=1e-5)
    absolute, step, _ = _fgm_norm(tiny, params, batch, radius_unit="absolute")
    moved, moved_step, _ = _fgm_norm(tiny, _scaled(params, c), batch, radius_unit="absolute")
    np.testing.assert_allclose(absolute, EPS, rtol=1e-5)
    np.testing.assert_allclose(moved, absolute, rtol=1e-5)
    assert step == moved_step == pytest.approx(0.01)


def test_embedding_rms_is_the_rms_row_norm(tiny):
    params = tiny.params()
    table = np.asarray(params["embedding"]["embedding"])
    expected = np.sqrt(np.mean(np.sum(table**2, axis=1)))
    np.testing.assert_allclose(float(tiny.model.embedding_rms(params)), expected, rtol=1e-5)


def test_unknown_radius_unit_names_the_field_and_values():
    adv = get_default_config().adv
    adv.method, adv.radius_unit = "pgd", "relative"
    with pytest.raises(UserError, match=r"adv\.radius_unit .*absolute.*embedding_rms") as err:
        validate_adv_config(adv, ("inputs",))
    assert "\n" not in str(err.value)
