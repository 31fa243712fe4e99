"""Method behaviour inside the real jitted, data-parallel train step (4 CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from llama_adv.tasks import build_task
from llama_adv.train.checkpoint import Checkpointer

TASK = build_task("classification")


def opt_count(opt_state) -> int:
    counts = [
        int(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
        if "count" in jax.tree_util.keystr(path)
    ]
    return max(counts)


def test_freeat_takes_m_optimizer_steps_per_batch(tiny):
    method = tiny.method("freeat", freeat__replays=3, epsilon=0.2)
    state, run, _, _ = tiny.trainer(method)
    state, metrics = run(state, tiny.batch(8))
    assert int(state.step) == 1 and opt_count(state.opt_state) == 3
    state, _ = run(state, tiny.batch(8, 8), 1)
    assert opt_count(state.opt_state) == 6
    assert np.isfinite(float(metrics["loss"]))


def test_freeat_carries_a_global_delta_across_batches(tiny):
    method = tiny.method("freeat", freeat__replays=2, epsilon=0.2)
    shapes = {"inputs": (8, tiny.config.data.max_length, tiny.config.model.d_model)}
    state, run, _, _ = tiny.trainer(method, batch_shapes=shapes)
    batch = tiny.batch(8)
    state, _ = run(state, batch)
    delta = np.asarray(state.method_state["delta"]["inputs"])
    mask = np.asarray(tiny.model.perturbable_mask(batch)["inputs"])  # no padding, no readout
    assert np.all(delta[~mask] == 0)
    # every device's rows were gathered back, not only device 0's
    assert np.all(np.abs(delta[mask]).sum(-1) > 0)


def test_freeat_carried_delta_fits_a_shorter_bucketed_batch(tiny):
    method = tiny.method("freeat", freeat__replays=2, epsilon=0.2)
    length = tiny.config.data.max_length
    shapes = {"inputs": (8, length, tiny.config.model.d_model)}
    state, run, _, _ = tiny.trainer(method, batch_shapes=shapes)
    state, _ = run(state, tiny.batch(8))
    before = np.asarray(state.method_state["delta"]["inputs"])
    short = {k: v[:, : length - 4] if v.ndim == 2 else v for k, v in tiny.batch(8, 8).items()}
    state, metrics = run(state, short, 1)
    after = np.asarray(state.method_state["delta"]["inputs"])
    assert after.shape == before.shape and np.isfinite(float(metrics["loss"]))
    np.testing.assert_array_equal(after[:, length - 4 :], before[:, length - 4 :])
    assert not np.array_equal(after[:, : length - 4], before[:, : length - 4])


def test_pgd_loss_exceeds_random_noise_of_the_same_norm(tiny):
    from llama_adv.adversarial import geometry

    state, run, _, _ = tiny.trainer(tiny.method("none"), num_devices=1)
    for i in range(30):  # brief clean training: the loss surface is no longer flat
        state, _ = run(state, tiny.batch(16, (16 * i) % 112), i)
    params, batch = state.params, tiny.batch(32, 64)
    method = tiny.method("pgd", epsilon=1.0, steps=5)
    objective, info = tiny.setup(params, batch)
    clean = objective(params, {}, jax.random.key(0))[1]
    pgd = method.attack(objective, params, info, jax.random.key(1), jnp.float32(1.0), clean)
    mask = info.masks["inputs"]
    noise = jax.random.normal(jax.random.key(2), pgd["inputs"].shape)
    size = geometry.norm(pgd["inputs"], "l2", "example")  # [B]: match each example's norm
    noise = geometry.to_sphere(noise, mask, size, "l2", "example")
    np.testing.assert_allclose(geometry.norm(noise, "l2", "example"), size, rtol=1e-4)
    adv_loss = float(jnp.mean(objective(params, pgd, jax.random.key(0))[0]))
    noise_loss = float(jnp.mean(objective(params, {"inputs": noise}, jax.random.key(0))[0]))
    clean_loss = float(jnp.mean(objective(params, {}, jax.random.key(0))[0]))
    assert adv_loss > noise_loss and adv_loss > clean_loss


def test_smart_switches_teacher_decay_after_ten_percent_of_training(tiny):
    from llama_adv.adversarial import build_method

    method = build_method(tiny.adv(method="smart"), tiny.task, num_steps=1000)
    assert method.switch_step == 100
    assert float(method.ema_decay(jnp.int32(99))) == pytest.approx(0.99)
    assert float(method.ema_decay(jnp.int32(100))) == pytest.approx(0.999)
    fixed = build_method(tiny.adv(method="smart", smart__ema_switch_step=7), tiny.task, 1000)
    assert fixed.switch_step == 7


def test_vat_trains_on_a_batch_without_labels(tiny):
    method = tiny.method("vat", epsilon=0.3)
    state, run, _, _ = tiny.trainer(method)
    batch = {**tiny.batch(8), "label": jnp.full((8,), -1, jnp.int32)}
    before = jax.tree.map(np.array, state.params)
    state, metrics = run(state, batch)
    assert float(metrics["loss_clean"]) == 0.0 and float(metrics["loss_div"]) > 0
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), before, state.params)
    assert max(jax.tree.leaves(moved)) > 0 and np.isfinite(float(metrics["loss"]))


def test_vat_supervised_term_uses_labelled_examples_only(tiny):
    method = tiny.method("vat", epsilon=0.3)
    params, batch = tiny.params(), tiny.batch(8)
    labeled = jnp.asarray([1, 0, 1, 1, 0, 0, 1, 0], jnp.float32)
    objective, info = tiny.setup(params, {**batch, "labeled": labeled})
    _, metrics, _ = jax.jit(lambda p: method.grads(objective, p, info, jax.random.key(0), {}))(
        params
    )
    out = tiny.model.apply(params, batch)
    per = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
    expected = float(jnp.sum(per * labeled) / jnp.sum(labeled))
    np.testing.assert_allclose(float(metrics["loss_clean"]), expected, rtol=1e-5)


def test_smart_bregman_is_zero_at_the_teacher_and_teacher_follows_ema(tiny):
    method = tiny.method("smart", smart__ema_switch_step=5)
    params, batch = tiny.params(), tiny.batch(8)
    state = method.init_state(params, 64)
    objective, info = tiny.setup(params, batch)
    clean = objective(params, {}, jax.random.key(0))[1]
    term, metrics = method.bregman(objective, state["teacher"], info, jax.random.key(0))(clean)
    assert float(term) == 0.0 and float(metrics["loss_breg"]) == 0.0

    def descend(p, opt_state, grads):  # a fixed "update": every parameter + 1
        return jax.tree.map(lambda x: x + 1.0, p), opt_state, jnp.zeros(())

    for step, beta in ((0, 0.99), (5, 0.999)):
        objective, info = tiny.setup(params, batch, step=step)
        new_params, _, m, new_state = method.update(
            objective, params, None, info, jax.random.key(1), state, descend
        )
        expected = jax.tree.map(
            lambda t, p: beta * t + (1 - beta) * p, state["teacher"], new_params
        )
        teacher = jax.tree.leaves(new_state["teacher"])
        for a, b in zip(teacher, jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert np.isclose(float(m["teacher_decay"]), beta)


def test_adaptive_radii_grow_shrink_and_stay_in_bounds(tiny, toy):
    method = tiny.method(
        "adaptive", adaptive__gamma=0.1, adaptive__smoothing=0.5, adaptive__eps_min=0.05,
        adaptive__eps_max=60.0, steps=5,
    )  # fmt: skip
    predicted = np.asarray(jnp.argmax(toy.logits(toy.params, {}), -1))
    labels = predicted.copy()
    labels[3] = 1 - labels[3]  # example 3 is wrong before any attack
    batch = {**toy.batch, "label": jnp.asarray(labels, jnp.int32)}
    objective, info = toy.setup(TASK, batch)
    radii = jnp.asarray([0.01, 0.01, 50.0, 0.08, 7.0])  # id 4 is not in the batch
    _, metrics, state = method.grads(
        objective, toy.params, info, jax.random.key(0), {"radii": radii}
    )
    new = np.asarray(state["radii"])
    # survived (tiny radius): grows; flipped (huge radius): shrinks; wrong clean: toward 0
    np.testing.assert_allclose(new[:2], 0.01 + 0.5 * 0.1, rtol=1e-5)
    np.testing.assert_allclose(new[2], 50.0 - 0.5 * 0.1, rtol=1e-5)
    np.testing.assert_allclose(new[3], 0.05, rtol=1e-5)  # 0.04, clipped up to eps_min
    assert new[4] == 7.0
    assert np.all(new >= 0.05) and np.all(new <= 60.0)
    assert float(metrics["radius_max"]) == 50.0 and np.isclose(float(metrics["radius_min"]), 0.01)


def test_adaptive_attacks_follow_the_radius_schedule(tiny, toy):
    """A linear ramp scales every example's radius for the attack; the stored radii and
    the rule stay in unscaled units."""
    method = tiny.method(
        "adaptive", adaptive__base="fgm", adaptive__gamma=0.1, adaptive__smoothing=1.0,
        radius_schedule="linear", radius_ramp_steps=4,
    )  # fmt: skip
    predicted = jnp.argmax(toy.logits(toy.params, {}), -1).astype(jnp.int32)
    batch = {**toy.batch, "label": predicted}  # every example correct before the attack
    objective, info = toy.setup(TASK, batch, step=1)  # 2 of 4 ramp steps done: factor 0.5
    radii = jnp.asarray([0.2, 0.4, 0.6, 0.8, 1.0])
    _, metrics, state = method.grads(
        objective, toy.params, info, jax.random.key(0), {"radii": radii}
    )
    np.testing.assert_allclose(float(metrics["radius_max"]), 0.5 * 0.8, rtol=1e-6)
    # FGM's perturbation is exactly each example's (scaled) radius.
    np.testing.assert_allclose(
        float(metrics["perturbation_norm"]), 0.5 * float(jnp.mean(radii[:4])), rtol=1e-5
    )
    moved = np.abs(np.asarray(state["radii"])[:4] - np.asarray(radii[:4]))
    np.testing.assert_allclose(moved, 0.1, rtol=1e-5)  # the rule's step, unscaled


def test_adaptive_radii_update_on_all_devices_and_survive_resume(tiny, tmp_path):
    method = tiny.method("adaptive", adaptive__smoothing=1.0, epsilon=0.5)
    state, run, _, _ = tiny.trainer(method, num_examples=64)
    for i in range(2):
        state, metrics = run(state, tiny.batch(8, 8 * i), i)
    radii = np.asarray(state.method_state["radii"])
    assert np.all(radii[:16] != 0.5) and np.all(radii[16:] == 0.5)  # all devices' ids
    assert {"radius_mean", "radius_min", "radius_max"} <= set(metrics)

    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    ckpt.save(state, {"data_position": 2})
    ckpt.close()
    fresh, _, _, _ = tiny.trainer(method, num_examples=64)
    reader = Checkpointer(tmp_path / "ckpt", keep=2)
    restored, _ = reader.restore(2, fresh)
    reader.close()
    np.testing.assert_array_equal(restored.method_state["radii"], radii)
    a, _ = run(state, tiny.batch(8, 16), 2)
    b, _ = run(restored, tiny.batch(8, 16), 2)
    np.testing.assert_array_equal(a.method_state["radii"], b.method_state["radii"])


def test_none_is_bitwise_plain_training(tiny):
    method = tiny.method("none")
    state, run, _, _ = tiny.trainer(method, num_devices=1)
    from llama_adv.train.optimizer import make_optimizer, make_schedule

    optimizer = make_optimizer(tiny.config.optim, make_schedule(tiny.config.optim, 100))
    model, task = tiny.model, tiny.task

    @jax.jit
    def plain(params, opt_state, batch, rng):
        def loss_fn(p):
            out = model.apply(p, batch, deterministic=False, rngs={"dropout": rng})
            return jnp.sum(task.loss(out, batch)) / jnp.sum(task.denominator(batch))

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = tiny.params(), optimizer.init(tiny.params())
    for i in range(3):
        batch = tiny.batch(8, 8 * i)
        state, _ = run(state, batch, i)
        rng = jax.random.fold_in(jax.random.key(1), i)  # the step's key: no per-device fold
        params, opt_state = plain(params, opt_state, batch, rng)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", ["pgd", "freelb"])
def test_doubling_ascent_steps_adds_no_compiled_programs(tiny, name):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        counts, sizes = [], []
        for steps in (2, 4):
            method = tiny.method(name, steps=steps)
            state, run, step, _ = tiny.trainer(method)
            run(state, tiny.batch(8))  # warm the small helpers (device_put, ...)
            compiles.clear()
            state, run, step, _ = tiny.trainer(method)
            state, _ = run(state, tiny.batch(8))
            state, _ = run(state, tiny.batch(8, 8), 1)
            counts.append(len(compiles))
            sizes.append(step._cache_size())
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert counts[0] == counts[1] and sizes == [1, 1]


@pytest.mark.parametrize("name", ["trades", "smart"])
def test_divergence_terms_average_over_unlabelled_examples_too(tiny, name):
    """The divergence is label-free: hiding half the labels leaves it unchanged (it is not
    divided by the labelled count only)."""
    method = tiny.method(name, epsilon=0.3)
    batch = tiny.batch(8)
    hidden = {**batch, "label": batch["label"].at[::2].set(-1)}
    values = []
    for b in (batch, hidden):
        state, run, _, _ = tiny.trainer(method)
        _, metrics = run(state, b)
        values.append(float(metrics["loss_div"]))
    assert values[0] > 0
    np.testing.assert_allclose(values[1], values[0], rtol=1e-5)
