"""IMDB test error beside Table 2 of Miyato et al. (2017), from a pre-trained model as in
the paper: baseline, random perturbation, adversarial (FGM), virtual adversarial (VAT,
with the 50,000 unlabelled reviews) and both (``adv.method=fgm_vat``).

Every run fine-tunes the decoder pre-trained as a language model on IMDB train + unsup
(``configs/pretrain_decoder_lm.py``; the paper pre-trains its LSTM on the same reviews),
tokenizing with that run's SentencePiece vocabulary (``data.tokenizer=spm:RUN``). The
error is measured on all 25,000 test reviews, which pre-training never read. 10 runs
(5 rows x 2 seeds), about 60 h on this project's 2 shared CPU cores (``BUDGET``,
measured): run it where a GPU is.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv train \\
        --config configs/pretrain_decoder_lm.py --workdir runs/pretrain_decoder
    LLAMA_ADV_DATA_DIR=../shared/data llama-adv sweep experiments/miyato_imdb_pretrained.py
    llama-adv table experiments/miyato_imdb_pretrained.py

Radius: Miyato et al. use eps = 5 over the whole example on embeddings normalised to unit
variance per dimension (256-d: rows of norm 16), i.e. 5 / 16 = 0.31 row norms; here
EPSILON = 0.3 times the RMS norm of the embedding rows (``adv.radius_unit=embedding_rms``),
the same for every perturbation. The perturbation leaves the readout token (the appended
EOS) and BOS alone, as they mask EOS (``adv.perturb_special=False``, the default).
"""

import importlib.util
from pathlib import Path

from llama_adv.experiments import Experiment, Metric, Reference, Table, named_axis

# The paper's rows and published numbers, loaded by path as experiment files are.
_spec = importlib.util.spec_from_file_location(
    "miyato_imdb", Path(__file__).with_name("miyato_imdb.py")
)
_miyato = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_miyato)

RUN = "runs/pretrain_decoder"
STEPS = 782  # one epoch of the 25,000 labelled reviews at 32 a batch
EPSILON = 0.3
OVERRIDES = (
    f"train.init_from={RUN}",
    f"data.tokenizer=spm:{RUN}",
    # The pre-training's window: the first 256 pieces of each review (the paper: 400
    # words), one length, no buckets.
    "data.max_length=256",
    "data.length_buckets=()",
    f"train.num_steps={STEPS}",
    "train.batch_size=32",
    "train.log_every=50",
    "train.eval_every=0",
    "train.progress_bar=False",
    "optim.learning_rate=1e-4",
    "optim.warmup_steps=80",
    "optim.schedule=linear",
    "checkpoint.every_steps=200",
    # Every test review (never fewer than 10,000); only the error rate: no attack.
    "eval.max_examples=0",
    "eval.attack.method=none",
    "eval.batch_size=128",
    f"adv.epsilon={EPSILON}",
    "adv.radius_unit=embedding_rms",
    "adv.vat.xi=1e-3",  # absolute: the probe inside the radius (the paper: 1e-6)
    "adv.norm=l2",
    "adv.scope=example",
)
# The paper's five rows (experiments/miyato_imdb.py): train+unsup batches of 96 for the
# two VAT rows, as many labelled reviews per batch as the others'.
METHODS = _miyato.METHODS
PUBLISHED = _miyato.PUBLISHED


def get_experiment(arg=None):
    return Experiment(
        title="IMDB test error: Miyato et al. (2017), Table 2, from a pre-trained decoder",
        config="configs/imdb.py",
        overrides=OVERRIDES,
        axes=(named_axis("method", METHODS),),
        seeds=(0, 1),
        metrics=(
            Metric(
                "error",
                "eval.accuracy",
                "test error (%)",
                scale=-100.0,
                offset=100.0,
                best="min",
                digits=2,
            ),
        ),
        table=Table(
            rows=("method",),
            references=(
                Reference(
                    "Miyato et al. 2017 (%)",
                    "error",
                    PUBLISHED,
                    note="1-layer LSTM (1024 units, 256-d embeddings) pre-trained as an LM "
                    "on the labelled and unlabelled reviews, 400 words, eps 5 on "
                    "normalised embeddings; random perturbation: 7.20 labelled only.",
                ),
            ),
            notes=(
                "Test error on all 25,000 test reviews (one standard error ~0.25 points at "
                "10% error).",
                f"All perturbations L2 over the whole example at {EPSILON} x the RMS norm "
                "of the embedding rows; EOS (the readout) and BOS are not perturbed.",
            ),
        ),
        scaled_down=(
            "a 7.5M-parameter 4-layer transformer decoder pre-trained on 10.65M tokens of "
            "IMDB train + unsup (the paper: an LSTM, its own pre-training); reviews cut to "
            "256 SentencePiece pieces (16k vocabulary); one epoch (782 steps of 32 "
            "labelled reviews; VAT rows add 64 unlabelled); 2 seeds."
        ),
        budget=BUDGET,
    )


# Measured 2026-12-01 (6 steps of seed 0 from scratch, the same shapes and passes; the
# 2-CPU machine shared with other work at load 6; seconds per step): baseline 5.5, adversarial
# (FGM) 10.3, virtual adversarial (batches of 96) 47.6; random perturbation (two passes)
# taken as FGM's and FGM + VAT as VAT's plus FGM's extra pass (~58), not measured.
# 782 steps x (5.5 + 10.3 + 10.3 + 47.6 + 58) = 28.6 h a seed; evaluating the 25,000 test
# reviews costs about 25 min a run (256 reviews measured at under 20 s).
BUDGET = (
    "measured 2026-12-01, a few steps of each kind of row on 2 shared CPU cores (load ~6): "
    "5.5 s (baseline) to 47.6 s (VAT, batches of 96) a step; one epoch of the 5 rows is "
    "about 29 h a seed plus ~25 min of test evaluation a run: ~60 h for 2 seeds at that "
    "load (perhaps half alone). The two VAT rows are 80% of it. Needs "
    "runs/pretrain_decoder first."
)
