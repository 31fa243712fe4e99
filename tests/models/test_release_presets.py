"""Presets of released checkpoints have exactly their parameter counts, and an imported
checkpoint of those shapes lands on its preset."""

import jax
import numpy as np
import pytest

from llama_adv.config import get_default_config
from llama_adv.models import build_model
from llama_adv.models.presets import PRESETS, apply_preset, matching_preset

# Published totals (config.json shapes): Llama-3.2-1B, Meta-Llama-3-8B, google/t5-v1_1-base.
RELEASED = {
    ("decoder", "llama3_1b"): 1_235_814_400,
    ("decoder", "llama3_8b"): 8_030_261_248,
    ("encoder_decoder", "t5_base"): 247_577_856,
}


@pytest.mark.parametrize("name, preset", list(RELEASED))
def test_release_presets_have_the_checkpoints_parameter_count(name, preset):
    config = get_default_config().model
    config.name, config.preset = name, preset
    model = build_model(config, head="lm", vocab_size=0, num_classes=0)
    tokens = jax.ShapeDtypeStruct((1, 8), np.int32)
    batch = ({"inputs": tokens} if name == "decoder"
             else {"encoder_inputs": tokens, "decoder_inputs": tokens})  # fmt: skip
    params = jax.eval_shape(model.init, jax.random.key(0), batch)  # shapes only
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == RELEASED[name, preset]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_found_again_from_its_fields(name):
    for preset in PRESETS[name]:
        config = get_default_config().model
        config.name, config.preset = name, preset
        fields = apply_preset(config).to_dict()
        fields["preset"] = ""
        assert matching_preset(name, fields) == preset
    config = get_default_config().model
    config.name = name
    config.d_model = 72  # no preset has it
    assert matching_preset(name, config.to_dict()) == ""
