"""Continuous adversarial training of a chat model (``cat``, Xhonneux et al. 2024): a
signed-gradient attack on the prompt embeddings of harmful requests, then the toward
(refusal), away (unlikelihood of the harmful target) and utility losses.

Default data: ``synthetic_chat`` (12.5% harmful requests, CAT's mix), the 2-layer decoder
of ``configs/chat_sft.py``; CPU in minutes:

    llama-adv train --config configs/chat_cat.py --workdir runs/chat_cat/ul
    llama-adv train --config configs/chat_cat.py:loss=ipo --workdir runs/chat_cat/ipo
    llama-adv robustness --workdir runs/chat_cat/ul --suite generation

Variants: those of ``configs/chat_sft.py`` (``steps``, ``data``, ``lora``, ``tiny``, ...)
and ``loss=ul|ipo`` (C-AdvUL, C-AdvIPO). The method's defaults are the reference's (see
``llama_adv/adversarial/methods/cat.py``): 10 signed steps of 1e-4, per-token radius 0.05 x
the mean embedding-row norm, weights toward 0.5 / away 0.5 / utility 1.

On an imported Hugging Face model with LoRA, change the same two fields as for
``chat_sft`` (``train.init_from`` and ``data.tokenizer``), with ``lora=64`` for the paper's
rank and ``data=advbench`` plus ``--config.data.chat_refusal="I cannot help with that."``
for harmful behaviours with targets:

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/chat_cat.py:data=advbench,lora=64 --workdir runs/chat_cat_lora \\
        --config.train.init_from=runs/imported --config.data.tokenizer=hf:CKPT/tokenizer.json \\
        --config.data.chat_refusal="I cannot help with that."
"""

import importlib.util
from pathlib import Path

_SFT = Path(__file__).with_name("chat_sft.py")


def _sft_config(arg: str | None):
    spec = importlib.util.spec_from_file_location("chat_sft", _SFT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def split_variant(arg: str | None, own: dict[str, str]) -> tuple[dict[str, str], str]:
    """``(this file's variants, the rest for chat_sft.py)`` of a variant string."""
    values, rest = dict(own), []
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key in own:
            values[key] = value
        else:
            rest.append(item)
    return values, ",".join(rest)


def get_config(arg=None):
    own, rest = split_variant(arg, {"loss": "ul"})
    config = _sft_config(",".join(filter(None, ["method=cat", rest])))
    config.adv.cat.loss = own["loss"]  # ul | ipo (checked with the adv section)
    return config
