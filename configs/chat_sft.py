"""Instruction fine-tuning (task ``chat``): the loss counts response tokens only.

Default data: ``synthetic_chat`` (repeat / reverse / sort a few words; 12.5% harmful
requests answered with a refusal), a 2-layer decoder, CPU in a couple of minutes:

    llama-adv train --config configs/chat_sft.py --workdir runs/chat_sft/none
    llama-adv train --config configs/chat_sft.py:method=neftune --workdir runs/chat_sft/neftune
    llama-adv train --config configs/chat_sft.py:method=pgd,perturb=prompt \\
        --workdir runs/chat_sft/pgd_prompt

Variants (comma-separated): ``method=NAME`` (any adversarial method; ``neftune`` uses
alpha 5), ``steps=N``, ``epsilon=X``, ``perturb=all|prompt|response``
(``adv.perturb_tokens``), ``data=NAME`` (``synthetic_chat``, ``alpaca_seed``,
``advbench``, ``chat_file``; the real ones read ``$LLAMA_ADV_DATA_DIR``), ``lora=R``
(``model.lora.rank``, on q k v o gate up down), ``tiny`` (a few steps: tests).

On an imported Hugging Face model with LoRA: import it (``llama-adv import-hf --arch llama
--path CKPT --out runs/imported``), pick real chat data and LoRA, and change two fields,
``train.init_from`` (the imported parameters) and ``data.tokenizer`` (its tokenizer; the
chat template is read from ``tokenizer_config.json`` beside it, so point it at the
checkpoint's own folder), plus ``model.preset`` when the shapes are not this config's
(``import-hf`` prints the preset, e.g. ``llama3_1b``):

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/chat_sft.py:data=alpaca_seed,lora=8 --workdir runs/chat_lora \\
        --config.train.init_from=runs/imported --config.model.preset=llama3_1b \\
        --config.data.tokenizer=hf:CKPT/tokenizer.json
"""

from llama_adv.config import get_default_config, parse_variant
from llama_adv.data.synthetic_chat import MIN_LENGTH

REAL_DATA = {"alpaca_seed": 175, "advbench": 520, "chat_file": 0}


def get_config(arg=None):
    variant = parse_variant(
        arg,
        method="none",
        steps=600,
        epsilon=1.0,
        perturb="all",
        data="synthetic_chat",
        lora=0,
        tiny=False,
    )
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.d_ff = 192
    config.task.name = "chat"
    config.data.name = variant["data"]
    config.data.max_length = max(MIN_LENGTH, 24)
    config.data.num_train = 4000
    config.data.num_eval = 256
    if variant["data"] in REAL_DATA:
        config.data.max_length = 256
        config.data.length_buckets = (64, 128, 256)
        if variant["data"] != "chat_file":  # one file: hold out its last 10% for evaluation
            held = REAL_DATA[variant["data"]] // 10
            config.data.train_split = f"train[:-{held}]"
            config.eval.split = f"train[-{held}:]"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.adv.perturb_tokens = variant["perturb"]
    config.adv.neftune.alpha = 5.0
    config.optim.learning_rate = 3e-3
    if variant["lora"]:
        config.model.lora.rank = int(variant["lora"])
        config.model.lora.alpha = 16.0
        config.model.lora.targets = ("q", "k", "v", "o", "gate", "up", "down")
        config.optim.learning_rate = 2e-4  # CAT's LoRA rate (Xhonneux et al. 2024)
    config.optim.warmup_steps = 30
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 32
    config.train.log_every = 50
    config.eval.batch_size = 128
    config.eval.attack.method = "none"  # a chat model is judged by its replies (generation)
    config.checkpoint.best_metric = "loss"
    config.checkpoint.best_mode = "min"
    config.checkpoint.every_steps = 200
    if variant["tiny"]:
        config.train.num_steps = 150
        config.train.log_every = 10
        config.optim.warmup_steps = 10
        config.data.num_train = 512
        config.data.num_eval = 64
        config.eval.batch_size = 32
        config.train.batch_size = 16
        config.checkpoint.every_steps = 150
    return config
