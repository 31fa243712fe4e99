"""Latent adversarial training of a chat model (``lat``, Sheshadri et al. 2024): an L2
attack on the residual stream at chosen layers that elicits the harmful target, against
which the model learns the refusal (toward), the unlikelihood of the target (away) and a
KL to its starting point on utility data.

Default data: ``synthetic_chat``, the 2-layer decoder of ``configs/chat_sft.py``,
perturbing the embeddings and the residual stream after block 0 (the reference's
Llama-3-8B setting is ``adv.streams=inputs,layer:8,layer:16,layer:24,layer:30``); CPU in
minutes:

    llama-adv train --config configs/chat_lat.py --workdir runs/chat_lat/targeted
    llama-adv train --config configs/chat_lat.py:targeted=False --workdir runs/chat_lat/untargeted
    llama-adv robustness --workdir runs/chat_lat/targeted --suite generation

Variants: those of ``configs/chat_sft.py`` and ``targeted=True|False`` (Sheshadri et al.'s
targeted LAT, or Casper et al.'s untargeted PGD on the latents), ``layers=0.1`` (the
``layer:N`` streams, dot-separated, besides the embeddings). The method's defaults are the
reference's (``llama_adv/adversarial/methods/lat.py``): 16 AdamW steps of 1e-3, per-token
L2 bound 6.0 (absolute), 4 model updates per attack; this config scales the bound to the
tiny model (``lat_epsilon=0.5``, a per-token bound below the residual norms) and, since it
trains from scratch, uses the reference's Llama-2 utility term (SFT 1.5) instead of the KL.

On an imported Hugging Face model with LoRA, change ``train.init_from`` and
``data.tokenizer`` as for ``chat_sft`` (``lora=64``, and the reference's layers and bound:
``--config.adv.streams=inputs,layer:8,layer:16,layer:24,layer:30 --config.adv.lat.epsilon=6``).
"""

import importlib.util
from pathlib import Path

_CAT = Path(__file__).with_name("chat_cat.py")


def _cat_module():
    spec = importlib.util.spec_from_file_location("chat_cat", _CAT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    cat = _cat_module()
    own, rest = cat.split_variant(arg, {"targeted": "True", "layers": "0", "lat_epsilon": "0.5"})
    config = cat._sft_config(",".join(filter(None, ["method=lat", rest])))
    config.adv.lat.targeted = own["targeted"] not in ("False", "false", "0")
    layers = [f"layer:{n}" for n in own["layers"].split(".") if n]
    config.adv.streams = ",".join(["inputs", *layers])
    config.adv.lat.epsilon = float(own["lat_epsilon"])
    # From scratch the model must also learn the utility replies: the reference's Llama-2
    # setting (sft 1.5) instead of its Llama-3 one (KL 0.1 to an already capable model).
    config.adv.lat.def_sft = 1.5
    config.adv.lat.def_kl = 0.0
    return config
