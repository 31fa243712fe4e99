"""Multi30k (task 1) English -> German translation with the encoder-decoder model.

Data: ``<data root>/multi30k/{train,val,test_2016_flickr}.{en,de}`` (29,000 / 1,014 /
1,000 pairs); a shared 8k SentencePiece (unigram) vocabulary trained on both sides of the
training split. Every evaluation reports corpus BLEU (sacrebleu) of greedy decodes against
the raw German references (``eval.bleu``); the best checkpoint is the one with the highest
BLEU, and ``llama-adv robustness`` reports BLEU under each embedding attack.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/multi30k_translate.py \\
        --workdir runs/multi30k/none

Variants: ``method=NAME``, ``steps=N``, ``epsilon=X``, ``tokenizer=sentencepiece|byte``,
``tiny`` (byte tokens, 512 pairs, a few steps: tests).
"""

from llama_adv.config import get_default_config, parse_variant, shrink_for_tests


def get_config(arg=None):
    variant = parse_variant(
        arg, method="none", steps=8000, epsilon=1.0, tokenizer="sentencepiece", tiny=False
    )
    config = get_default_config()
    config.model.name = "encoder_decoder"
    config.model.d_model = 256
    config.model.num_layers = 3
    config.model.num_heads = 4
    config.model.d_ff = 768
    config.model.dropout_rate = 0.1
    config.task.name = "seq2seq"
    config.data.name = "multi30k"
    config.data.text_field = "en"
    config.data.target_field = "de"
    config.data.tokenizer = variant["tokenizer"]
    config.data.vocab_size = 8000
    config.data.max_length = 48  # 99.9% of Multi30k sentences fit in 48 pieces
    config.data.target_max_length = 48
    config.data.length_buckets = (24,)
    config.eval.split = "validation"
    config.adv.method = variant["method"]
    config.adv.epsilon = float(variant["epsilon"])
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 500
    config.train.num_steps = int(variant["steps"])
    config.train.batch_size = 128
    config.train.log_every = 100
    config.train.eval_every = 2000
    config.eval.batch_size = 128
    config.checkpoint.best_metric = "bleu"
    config.checkpoint.best_mode = "max"
    config.checkpoint.every_steps = 2000
    if variant["tiny"]:
        shrink_for_tests(config)
        config.data.tokenizer = "byte"
        config.data.train_split = "train[:512]"
        config.data.max_length = config.data.target_max_length = 64
        config.data.length_buckets = ()
    return config
