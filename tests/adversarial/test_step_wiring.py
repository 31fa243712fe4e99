"""The real train step hands the model's mask options, stream tokens and embedding scale
to the methods (``adv.perturb_special``, ``adv.skip_token_ids``, ``adv.radius_unit``)."""

import numpy as np

from llama_adv.adversarial import build_method


def _first_update(tiny, **adv):
    method = build_method(tiny.adv(method="fgm", epsilon=0.5, **adv), tiny.task)
    state, run, _, _ = tiny.trainer(method)
    _, metrics = run(state, tiny.batch(8))
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def test_perturb_special_reaches_the_train_step(tiny):
    default = _first_update(tiny)
    special = _first_update(tiny, perturb_special=True)
    assert default["loss_adv"] != special["loss_adv"]  # the readout token's share moved
    assert default["loss_clean"] == special["loss_clean"]


def test_skip_token_ids_reach_the_train_step(tiny):
    word = int(np.asarray(tiny.batch(8)["inputs"])[0, 0])  # a word every batch row may hold
    assert (
        _first_update(tiny)["loss_adv"] != _first_update(tiny, skip_token_ids=(word,))["loss_adv"]
    )


def test_embedding_rms_radius_in_the_train_step(tiny):
    params = tiny.params()
    rms = float(np.asarray(tiny.model.embedding_rms(params)))
    metrics = _first_update(tiny, radius_unit="embedding_rms")
    # FGM's L2 step lands on the sphere: its norm is the radius, eps x the RMS row norm.
    np.testing.assert_allclose(metrics["perturbation_norm"], 0.5 * rms, rtol=1e-4)
    absolute = _first_update(tiny)
    np.testing.assert_allclose(absolute["perturbation_norm"], 0.5, rtol=1e-4)
