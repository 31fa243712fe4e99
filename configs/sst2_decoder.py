"""SST-2 sentiment classification with the decoder-only model (GLUE dev as evaluation).

Data: GLUE's SST-2 TSV files in ``<data root>/sst2`` (67,349 train, 872 dev); byte tokens.
Run from the repository root (on the project's machines the data root is ../shared/data):

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/sst2_decoder.py \\
        --workdir runs/sst2_decoder/none
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/sst2_decoder.py:method=fgm --workdir runs/sst2_decoder/fgm

Pre-train, then fine-tune: the model matches ``configs/tiny_shakespeare_lm.py`` (byte
tokens, same sizes), so a character-level language model trained there can be the start::

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \
        --config configs/tiny_shakespeare_lm.py --workdir runs/tiny_shakespeare/none
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \
        --config configs/sst2_decoder.py:init_from=runs/tiny_shakespeare/none \
        --workdir runs/sst2_decoder/from_lm

The body comes from the LM's best checkpoint, the classifier head is new
(``runs/sst2_decoder/from_lm/init_report.json`` lists both).

Variants (comma-separated): ``method=NAME``, ``steps=N``, ``epsilon=X``,
``tokenizer=byte|sentencepiece``, ``init_from=RUN`` (``train.init_from``), ``tiny`` (512
training examples, a few steps: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests


def get_config(arg=None):
    variant = parse_variant(
        arg, method="none", steps=4000, epsilon=1.0, tokenizer="byte", init_from="", tiny=False
    )
    config = get_default_config()
    config.model.name = "decoder"
    config.model.d_model = 256
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.1
    config.task.name = "classification"
    config.data.name = "sst2"
    config.data.tokenizer = variant["tokenizer"]
    config.data.vocab_size = 8000
    # Byte tokens: 95% of SST-2 sentences fit in 192 bytes; buckets keep short batches short.
    config.data.max_length = 256 if variant["tokenizer"] == "byte" else 80
    config.data.length_buckets = (64, 128) if variant["tokenizer"] == "byte" else (32,)
    config.eval.split = "validation"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.train.init_from = variant["init_from"]
    config.optim.learning_rate = 5e-4
    config.optim.warmup_steps = 200
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 64
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.eval.batch_size = 128
    config.checkpoint.every_steps = 1000
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.train_split = "train[:512]"
        config.data.max_length = 64
        config.data.length_buckets = (32,)
    return config
