"""Classification ignores unlabelled rows (label -1) in its loss and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.data.base import Split
from llama_adv.tasks import build_task
from llama_adv.train.evaluate import evaluate, make_eval_step
from llama_adv.train.mesh import make_mesh, replicated
from llama_adv.train.setup import build_experiment

TASK = build_task("classification")


def test_task_loss_and_accuracy_skip_unlabelled_rows():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    labels = jnp.asarray([0, -1, 2, 1, -1, 2], jnp.int32)
    batch = {"label": labels, "weight": jnp.ones(6, jnp.float32)}
    kept = np.asarray(labels) >= 0
    sub = {"label": labels[kept], "weight": jnp.ones(int(kept.sum()), jnp.float32)}
    out, sub_out = {"logits": logits}, {"logits": logits[kept]}

    loss = np.asarray(TASK.loss(out, batch))
    assert np.all(loss[~kept] == 0) and np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss[kept], TASK.loss(sub_out, sub), rtol=1e-6)
    assert float(jnp.sum(TASK.denominator(batch))) == kept.sum()
    for name, (total, count) in TASK.metrics(out, batch).items():
        sub_total, sub_count = TASK.metrics(sub_out, sub)[name]
        np.testing.assert_allclose(total, sub_total, rtol=1e-6)
        assert float(count) == float(sub_count) == kept.sum()


@pytest.mark.parametrize("attack", ["none", "fgm"])
def test_evaluation_is_unchanged_by_appended_unlabelled_rows(quickstart_config, attack):
    config = quickstart_config(
        "tiny", "data.num_eval=24", f"eval.attack.method={attack}", "eval.attack.epsilon=0.01"
    )
    exp = build_experiment(config)
    mesh = make_mesh()
    split = exp.dataset.split("validation")
    params = exp.model.init(jax.random.key(0), split.take(np.arange(4)))
    params = jax.device_put(params, replicated(mesh))
    arrays = {k: np.concatenate([v, v[:8]]) for k, v in split.arrays.items()}
    arrays["label"][len(split) :] = -1
    arrays["example_id"] = np.arange(len(split) + 8, dtype=np.int32)
    mixed = Split(arrays, split.texts + split.texts[:8])

    step = make_eval_step(exp.model, exp.task, config.eval.attack)
    clean = evaluate(step, params, split, mesh, config.eval, jax.random.key(0))
    with_unlabelled = evaluate(step, params, mixed, mesh, config.eval, jax.random.key(0))
    assert clean["num_examples"] == with_unlabelled["num_examples"] == 24
    names = ["loss", "accuracy"] + (["attack_loss", "attack_accuracy"] if attack != "none" else [])
    assert all(clean[name] > 0 for name in names)
    for name in names:
        np.testing.assert_allclose(with_unlabelled[name], clean[name], rtol=1e-5, err_msg=name)
