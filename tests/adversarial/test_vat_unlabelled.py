"""VAT (and FGM + VAT) on batches mixing labelled and unlabelled (label -1) examples."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

UNLABELLED = np.array([False, True, False, True, True, False, False, True])


def vat_metrics(tiny):
    """``metrics(params, batch)`` of one VAT update, jitted once for both batches."""
    method = tiny.method("vat", epsilon=0.3)

    def metrics(params, batch):
        objective, info = tiny.setup(params, batch)
        return method.grads(objective, params, info, jax.random.key(0), {})[1]

    return jax.jit(metrics)


def test_unlabelled_rows_feed_the_kl_term_but_not_the_supervised_term(tiny):
    params, batch = tiny.params(), tiny.batch(8)
    mixed = {**batch, "label": jnp.where(UNLABELLED, -1, batch["label"])}
    run = vat_metrics(tiny)
    metrics, full = run(params, mixed), run(params, batch)

    logits = tiny.model.apply(params, batch)["logits"]
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    np.testing.assert_allclose(float(metrics["loss_clean"]), ce[~UNLABELLED].mean(), rtol=1e-5)
    # The KL term needs no label: hiding labels leaves it (same rows, same mean) unchanged.
    np.testing.assert_allclose(float(metrics["loss_div"]), float(full["loss_div"]), rtol=1e-5)
    assert float(metrics["loss_div"]) > 0


def _grads_and_metrics(tiny, name, params, batch, **overrides):
    method = tiny.method(name, epsilon=0.3, **overrides)
    objective, info = tiny.setup(params, batch)
    grads, metrics, _ = jax.jit(lambda p: method.grads(objective, p, info, jax.random.key(0), {}))(
        params
    )
    return grads, metrics


def _assert_trees_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)


def test_fgm_vat_is_fgm_plus_vat(tiny):
    """Miyato et al.'s "adversarial + virtual adversarial": each term alone is the
    corresponding method, and together the gradient is their sum less one clean term."""
    params, batch = tiny.params(), tiny.batch(8)
    fgm, fgm_metrics = _grads_and_metrics(tiny, "fgm", params, batch)
    vat, vat_metrics = _grads_and_metrics(tiny, "vat", params, batch)
    no_kl, _ = _grads_and_metrics(tiny, "fgm_vat", params, batch, weight_div=0.0)
    no_adv, _ = _grads_and_metrics(tiny, "fgm_vat", params, batch, weight_adv=0.0)
    both, metrics = _grads_and_metrics(tiny, "fgm_vat", params, batch)
    _assert_trees_close(no_kl, fgm)
    _assert_trees_close(no_adv, vat)
    clean, _ = _grads_and_metrics(tiny, "none", params, batch)
    _assert_trees_close(both, jax.tree.map(lambda f, v, c: f + v - c, fgm, vat, clean))
    # Its adversarial term is FGM's, its KL term VAT's; the logged perturbation is r_adv.
    for key, reference in (("loss_adv", fgm_metrics), ("loss_div", vat_metrics)):
        np.testing.assert_allclose(float(metrics[key]), float(reference[key]), rtol=1e-5)
    assert float(metrics["loss_adv"]) > float(metrics["loss_clean"])
    np.testing.assert_allclose(float(metrics["perturbation_norm"]), 0.3, rtol=1e-4)


def test_fgm_vat_leaves_unlabelled_rows_to_the_kl_term(tiny):
    params, batch = tiny.params(), tiny.batch(8)
    mixed = {**batch, "label": jnp.where(UNLABELLED, -1, batch["label"])}
    _, metrics = _grads_and_metrics(tiny, "fgm_vat", params, mixed)
    _, full = _grads_and_metrics(tiny, "fgm_vat", params, batch)
    _, vat = _grads_and_metrics(tiny, "vat", params, mixed)
    np.testing.assert_allclose(float(metrics["loss_div"]), float(full["loss_div"]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_clean"]), float(vat["loss_clean"]), rtol=1e-5)
    # The labelled rows alone: the adversarial term is their mean loss at x + r_adv.
    labelled = {k: v[~UNLABELLED] for k, v in batch.items()}
    _, fgm = _grads_and_metrics(tiny, "fgm", params, labelled)
    np.testing.assert_allclose(float(metrics["loss_adv"]), float(fgm["loss_adv"]), rtol=1e-4)
