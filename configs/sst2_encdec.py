"""SST-2 sentiment classification with the encoder-decoder (T5-style) model.

Data: GLUE's SST-2 TSV files in ``<data root>/sst2`` (67,349 train, 872 dev); byte tokens.
Run from the repository root (on the project's machines the data root is ../shared/data):

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train --config configs/sst2_encdec.py \\
        --workdir runs/sst2_encdec/none
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/sst2_encdec.py:method=fgm --workdir runs/sst2_encdec/fgm

Variants (comma-separated): ``method=NAME``, ``steps=N``, ``epsilon=X``,
``tokenizer=byte|sentencepiece``, ``tiny`` (512 training examples, a few steps: tests).
"""

import importlib.util
from pathlib import Path

# Everything but the architecture is the decoder-only SST-2 setting; load it by path, as
# config files are loaded.
_spec = importlib.util.spec_from_file_location(
    "sst2_decoder", Path(__file__).with_name("sst2_decoder.py")
)
_sst2_decoder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sst2_decoder)


def get_config(arg=None):
    config = _sst2_decoder.get_config(arg)
    config.model.name = "encoder_decoder"
    return config
