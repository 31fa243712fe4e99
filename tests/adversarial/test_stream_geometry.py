"""Joint geometry: on the encoder-decoder with both streams perturbed, the radius bounds
the two streams together (per example, concatenated) unless adv.stream_geometry=per_stream."""

import jax
import numpy as np
import pytest
from _adv_helpers import single_device_setup, tiny_seq2seq

from llama_adv.adversarial import attacks, build_method, geometry, validate_adv_config
from llama_adv.config import get_default_config
from llama_adv.errors import UserError

EPS = 0.3


@pytest.fixture(scope="module")
def seq2seq():
    config, task, model, batch, params = tiny_seq2seq()
    objective, info = single_device_setup(model, task, params, batch)
    assert set(info.masks) == {"encoder", "decoder"}
    return config, task, params, info, objective


def _norms(delta):
    streams = {k: np.asarray(geometry.norm(v, "l2", "example")) for k, v in delta.items()}
    return np.sqrt(sum(v**2 for v in streams.values())), streams


def _attack(seq2seq, name, stream_geometry):
    config, task, params, info, objective = seq2seq
    adv = config.adv.copy_and_resolve_references()
    adv.method, adv.epsilon, adv.stream_geometry = name, EPS, stream_geometry
    method = build_method(adv, task)
    clean = objective(params, {}, jax.random.key(0))[1]
    rng = jax.random.key(1)
    if name == "pgd":
        _, iterates = method.attack(objective, params, info, rng, EPS, clean, record=True)
        return method, [{k: v[t] for k, v in iterates.items()} for t in range(method.opt.steps)]
    return method, [method.attack(objective, params, info, rng, EPS, clean)]


@pytest.mark.parametrize("name", ["pgd", "fgm", "vat"])
def test_joint_radius_bounds_both_streams_together(seq2seq, name):
    _, deltas = _attack(seq2seq, name, "joint")
    for delta in deltas:
        joint, _ = _norms(delta)
        assert np.all(joint <= EPS + 1e-6), joint.max()
    if name != "pgd":  # a single step lands on the sphere: eps, not sqrt(2) eps
        np.testing.assert_allclose(_norms(deltas[-1])[0], EPS, rtol=1e-5)


@pytest.mark.parametrize("name", ["pgd", "fgm", "vat"])
def test_per_stream_radius_bounds_each_stream(seq2seq, name):
    _, deltas = _attack(seq2seq, name, "per_stream")
    for delta in deltas:
        _, streams = _norms(delta)
        for size in streams.values():
            assert np.all(size <= EPS + 1e-6), size.max()
    if name != "pgd":  # each stream reaches eps, so together they exceed it
        assert np.all(_norms(deltas[-1])[0] > EPS * 1.3)


@pytest.mark.parametrize("stream_geometry", ["joint", "per_stream"])
def test_logged_norm_is_the_bounded_norm(seq2seq, stream_geometry):
    config, task, params, info, objective = seq2seq
    adv = config.adv.copy_and_resolve_references()
    adv.method, adv.epsilon, adv.stream_geometry = "fgm", EPS, stream_geometry
    _, metrics, _ = build_method(adv, task).grads(objective, params, info, jax.random.key(2), {})
    np.testing.assert_allclose(float(metrics["perturbation_norm_max"]), EPS, rtol=1e-5)


def test_evaluation_attacks_follow_the_geometry(seq2seq):
    _, _, params, info, objective = seq2seq

    def loss_fn(delta):
        return objective(params, delta, None)[0]

    for stream_geometry, bound in [("joint", EPS), ("per_stream", EPS * np.sqrt(2))]:
        delta = attacks.pgd_attack(
            loss_fn, info.masks, info.shapes, jax.random.key(0), epsilon=EPS, steps=2,
            step_size=EPS, norm="l2", scope="example", stream_geometry=stream_geometry,
        )  # fmt: skip
        assert np.all(_norms(delta)[0] <= bound + 1e-6)


def test_unknown_stream_geometry_names_the_field_and_values():
    adv = get_default_config().adv
    adv.method, adv.stream_geometry = "pgd", "together"
    with pytest.raises(UserError, match=r"adv\.stream_geometry .*joint.*per_stream") as err:
        validate_adv_config(adv, ("inputs",))
    assert "\n" not in str(err.value)
