"""The chat task: response-only loss, prompt_mask, adv.perturb_tokens, an end-to-end run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_adv.adversarial import BatchInfo, build_method
from llama_adv.config import get_default_config, load_config
from llama_adv.config.validate import validate_config
from llama_adv.data.synthetic_chat import MIN_LENGTH, chat
from llama_adv.errors import UserError
from llama_adv.models import build_model
from llama_adv.tasks import build_task
from llama_adv.tasks.chat import away_batch
from llama_adv.train import train_and_evaluate
from llama_adv.train.step import make_objective


@pytest.fixture(scope="module")
def chat_batch():
    split = chat(16, 8, MIN_LENGTH, seed=0, harmful_fraction=0.5).split("train")
    return {k: jnp.asarray(v) for k, v in split.take(np.arange(8)).items()}


def test_prompt_logits_do_not_enter_the_loss(chat_batch):
    task = build_task("chat")
    b, t = chat_batch["inputs"].shape
    logits = jax.random.normal(jax.random.key(0), (b, t, 64))
    loss_of = jax.jit(lambda logits: task.loss({"logits": logits}, chat_batch))
    loss = loss_of(logits)
    prompt = chat_batch["prompt_mask"].astype(bool)
    # the last prompt position predicts the first response token: it is scored
    prompt_only = prompt & (chat_batch["target_weight"] == 0)
    assert prompt_only.sum() > 0 and jnp.all(prompt.sum(1) > 0)
    noise = 5.0 * jax.random.normal(jax.random.key(1), logits.shape)
    changed = jnp.where(prompt_only[..., None], logits + noise, logits)
    np.testing.assert_allclose(loss_of(changed), loss, rtol=1e-6)
    response = chat_batch["target_weight"] > 0
    changed = jnp.where(response[..., None], logits + noise, logits)
    assert np.all(np.abs(loss_of(changed) - loss) > 1e-3)
    # normalised by the number of response targets
    np.testing.assert_allclose(task.denominator(chat_batch), response.sum(1))


def test_away_batch_views_the_harmful_target(chat_batch):
    away = away_batch(chat_batch)
    assert away["inputs"] is chat_batch["away_inputs"]
    np.testing.assert_array_equal(
        build_task("chat").denominator(away) > 0, chat_batch["harmful"] == 1
    )
    with pytest.raises(KeyError, match="no away sequence"):
        away_batch({"inputs": chat_batch["inputs"]})


@pytest.fixture(scope="module")
def tiny_model(chat_batch):
    config = get_default_config()
    config.model.d_model, config.model.num_layers, config.model.d_ff = 32, 1, 64
    model = build_model(config.model, head="lm", vocab_size=64, num_classes=0)
    return model, jax.jit(model.init)(jax.random.key(0), chat_batch)


def _setup(chat_batch, tiny_model, **adv):
    config = get_default_config()
    for key, value in adv.items():
        config.adv[key] = value
    task = build_task("chat")
    model, params = tiny_model
    masks = {k: m.astype(jnp.float32) for k, m in model.perturbable_mask(chat_batch).items()}
    info = BatchInfo(
        masks=masks,
        shapes={k: v.shape for k, v in model.embed(params, chat_batch).items()},
        batch=chat_batch,
        denominator=jnp.sum(task.denominator(chat_batch)),
        step=jnp.asarray(0),
        axis_name=None,
        tokens=model.stream_tokens(chat_batch),
    )
    method = build_method(config.adv, task)
    return method, make_objective(model, task, chat_batch, masks), params, info


@pytest.mark.parametrize("which", ["prompt", "response"])  # "all": the other tests
def test_perturb_tokens_restricts_every_method(chat_batch, tiny_model, which):
    real = chat_batch["inputs"] != 0
    allowed = real & (chat_batch["inputs"] != 1)  # the model leaves BOS out
    prompt = chat_batch["prompt_mask"].astype(bool)
    expected = allowed & prompt if which == "prompt" else allowed & ~prompt
    assert expected.sum() > 0
    pgd, objective, params, info = _setup(
        chat_batch, tiny_model, method="pgd", perturb_tokens=which, steps=2
    )
    np.testing.assert_array_equal(pgd.masks(info)["inputs"] > 0, expected)

    @jax.jit
    def attack(params):
        clean = objective(params, {}, None)[1]
        return pgd.attack(objective, params, info, jax.random.key(2), 1.0, clean)["inputs"]

    delta = attack(params)
    moved = jnp.any(delta != 0, axis=-1)
    assert not jnp.any(moved & ~expected) and jnp.any(moved)
    # NEFTune: noise only where allowed, its scale from each example's full length
    nef, _, _, info = _setup(chat_batch, tiny_model, method="neftune", perturb_tokens=which)
    noise = jax.jit(lambda key: nef.noise(key, info)["inputs"])(jax.random.key(3))
    np.testing.assert_array_equal(jnp.any(noise != 0, axis=-1), expected)
    norm = jnp.max(jnp.abs(noise), axis=(1, 2))
    bound = 5.0 / jnp.sqrt(info.masks["inputs"].sum(1) * noise.shape[-1])
    assert jnp.all(norm <= bound + 1e-6)


def test_perturb_tokens_needs_the_chat_task(quickstart_config):
    config = quickstart_config("tiny", "adv.method=fgm", "adv.perturb_tokens=prompt")
    with pytest.raises(UserError, match=r"adv.perturb_tokens=prompt needs a task with prompts"):
        validate_config(config)
    with pytest.raises(UserError, match="perturb_tokens"):
        validate_config(quickstart_config("tiny", "adv.perturb_tokens=middle"))
    ok = load_config("configs/chat_sft.py:tiny,method=fgm,perturb=response", ())
    validate_config(ok)
    lm_batch = {"inputs": jnp.ones((2, 4), jnp.int32)}  # no prompt_mask
    info = BatchInfo({"inputs": jnp.ones((2, 4))}, {"inputs": (2, 4, 8)}, lm_batch, 1.0, 0)
    with pytest.raises(UserError, match="needs batches with prompt_mask"):
        build_method(ok.adv, build_task("chat")).masks(info)


def test_chat_sft_tiny_trains(repo, tmp_path):
    config = load_config(f"{repo / 'configs' / 'chat_sft.py'}:tiny", ())
    summary = train_and_evaluate(config, tmp_path)
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert losses[-1] < 0.6 * losses[0]  # about 3.5 -> 1 in 150 steps
    assert np.isfinite(summary["eval"]["loss"])
