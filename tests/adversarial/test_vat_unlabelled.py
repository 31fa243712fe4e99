"""VAT on batches mixing labelled and unlabelled (label -1) examples."""

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
