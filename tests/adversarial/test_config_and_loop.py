"""Bad method configs fail at config time naming the field; every method trains through
the real loop (decoder-only classification; a few on the encoder-decoder seq2seq task)."""

import json
import math

import numpy as np
import orbax.checkpoint as ocp
import pytest

from llama_adv.adversarial import METHODS, validate_adv_config
from llama_adv.config import get_default_config
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate

STANDARD = {"loss", "loss_clean", "loss_adv", "loss_div", "perturbation_norm",
            "perturbation_norm_max", "flip_rate"}  # fmt: skip


@pytest.mark.parametrize(
    "method,overrides,field",
    [
        ("pgd", {"epsilon": -0.1}, "adv.epsilon"),
        ("pgd", {"steps": 0}, "adv.steps"),
        ("freelb", {"steps": 0}, "adv.steps"),
        ("vat", {"weight_div": 0.0}, "adv.weight_div"),
        ("alum", {"weight_div": 0.0}, "adv.weight_div"),
        ("random", {"weight_div": 0.0}, "adv.weight_div"),  # no perturbed term left
        ("pgd", {"init": "sphere"}, "adv.init"),
        ("fgm", {"streams": "encoder"}, "adv.streams"),
        ("pgd", {"norm": "l3"}, "adv.norm"),
        ("pgd", {"inner": "js"}, "adv.inner"),
        ("pgd", {"unbounded": True}, "adv.step_size"),
        ("fgm", {"unbounded": True}, "adv.unbounded"),
        ("pgd", {"radius_schedule": "linear"}, "adv.radius_ramp_steps"),
        ("nope", {}, "adv.method"),
    ],
)
def test_bad_config_names_the_field(method, overrides, field):
    adv = get_default_config().adv
    adv.method = method
    for key, value in overrides.items():
        adv[key] = value
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        validate_adv_config(adv, ("inputs",))


@pytest.mark.parametrize(
    "section,key,value,field",
    [
        ("freeat", "replays", 0, "adv.freeat.replays"),
        ("adaptive", "base", "trades", "adv.adaptive.base"),
        ("adaptive", "eps_min", 9.0, "adv.adaptive.eps_min"),
        ("smart", "ema_late", 1.5, "adv.smart.ema_late"),
    ],
)
def test_bad_method_section_names_the_field(section, key, value, field):
    adv = get_default_config().adv
    adv.method = section
    adv[section][key] = value
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        validate_adv_config(adv, ("inputs",))


def test_defaults_validate_for_every_method():
    for name in METHODS.names():
        adv = get_default_config().adv
        adv.method = name
        validate_adv_config(adv, ("inputs",))


SMALL = ("model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.d_ff=64",
         "train.num_steps=2", "train.log_every=1", "train.progress_bar=False",
         "eval.max_examples=16", "eval.batch_size=16", "eval.attack.method=none")  # fmt: skip


def _train(quickstart_config, tmp_path, method, *extra):
    config = quickstart_config(f"tiny,method={method}", *SMALL, *extra)
    summary = train_and_evaluate(config, tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert summary["step"] == 2 and len(train) == 2
    for record in train:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    return summary, train[-1]


# cat needs a chat batch (tests/adversarial/test_chat_methods.py, test_chat_lora.py); lat
# runs here untargeted (Casper et al.), which any task allows.
CHAT_ONLY = {"cat"}
UNTARGETED = {"lat": ("adv.lat.targeted=False", "adv.lat.steps=2", "adv.lat.defense_steps=2")}


@pytest.mark.parametrize("method", sorted(set(METHODS.names()) - {"none"} - CHAT_ONLY))
def test_every_method_trains_through_the_loop(quickstart_config, tmp_path, method):
    extra = UNTARGETED.get(method, ())
    summary, last = _train(quickstart_config, tmp_path, method, "adv.begin_step=1", *extra)
    # NEFTune runs no clean pass: no clean loss, no flip rate; LAT reports its own terms.
    expected = STANDARD - {"loss_clean", "flip_rate"} if method == "neftune" else STANDARD
    if method == "lat":
        expected = {"loss", "loss_adv", "perturbation_norm", "perturbation_norm_max"}
    assert set(last) >= expected, expected - set(last)
    assert len(summary["passes"]) == 2
    if method == "adaptive":
        assert {"radius_mean", "radius_min", "radius_max"} <= set(last)


@pytest.mark.parametrize("method", ["cat", "lat"])
def test_chat_methods_refuse_other_tasks(quickstart_config, method):
    from llama_adv.config.validate import validate_config

    with pytest.raises(UserError, match=f"adv.method='{method}' needs task.name='chat'"):
        validate_config(quickstart_config(f"tiny,method={method}"))


# Three representative methods in CI; every other one under -m slow (make test-all).
ENCDEC_FAST = ("pgd", "freelb", "smart")


@pytest.mark.parametrize(
    "method",
    [m if m in ENCDEC_FAST else pytest.param(m, marks=pytest.mark.slow)
     for m in sorted(set(METHODS.names()) - {"none", "r4f"})],  # r4f: classification only
)  # fmt: skip
def test_methods_train_the_encoder_decoder(quickstart_config, tmp_path, method):
    _train(
        quickstart_config, tmp_path, method, "model.name=encoder_decoder",
        "data.name=synthetic_reverse", "task.name=seq2seq", "data.max_length=8",
        "data.target_max_length=8", "checkpoint.best_metric=",
    )  # fmt: skip


def test_freeat_carries_delta_and_schedules_every_update_through_the_loop(
    quickstart_config, tmp_path
):
    from llama_adv.train.checkpoint import Checkpointer
    from llama_adv.train.optimizer import make_schedule

    _, last = _train(quickstart_config, tmp_path, "freeat")
    config = quickstart_config("tiny,method=freeat", *SMALL)
    # 2 batches x 3 replays: the schedule spans 6 updates; batch 2 starts at update 3
    expected = float(make_schedule(config.optim, 6)(3))
    assert last["learning_rate"] == pytest.approx(expected, rel=1e-6)
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=2)
    try:
        state = ckpt.manager.restore(
            2, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        ).state
    finally:
        ckpt.close()
    delta = np.asarray(state["method_state"]["delta"]["inputs"])
    assert delta.shape == (config.train.batch_size, config.data.max_length, 32)
    assert np.abs(delta).sum() > 0
