"""SST-2: every adversarial training method on the small decoder-only model.

Clean GLUE-dev accuracy, accuracy under the evaluation's embedding PGD attack, and each
method's measured step time as a ratio to clean training with the same seed.

    LLAMA_ADV_DATA_DIR=../shared/data llama-adv sweep experiments/sst2_methods.py --parallel 2
    llama-adv table experiments/sst2_methods.py

39 runs (13 methods x 3 seeds); 62 min on 2 busy CPU cores (measured, see ``budget``).

Variant ``pilot``: ``none`` and ``fgm``, seed 0 only (about 5 min), to check accuracy and the
radius before the full sweep, e.g. with
``llama-adv robustness --workdir runs/sst2_methods-pilot/method=fgm,seed=0 --suite embedding``
(accuracy against several radii).
"""

import importlib.util
from pathlib import Path

from llama_adv.config import parse_variant
from llama_adv.experiments import Experiment, Metric, Plot, Table, accuracy_metrics, named_axis

# The shared scaled-down SST-2 setting, loaded by path as experiment files are.
_spec = importlib.util.spec_from_file_location(
    "_sst2_small", Path(__file__).with_name("_sst2_small.py")
)
small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(small)

METHODS = ("none", "neftune", "random", "r4f", "fgm", "pgd", "freeat", "freelb", "smart", "vat",
           "alum", "trades", "adaptive")  # fmt: skip
FREEAT_REPLAYS = 3  # adv.freeat.replays, the default
METRICS = accuracy_metrics() + (
    Metric("step_ratio", "step_time_sec", "step time / none", best="", digits=2,
           relative_to={"method": "none"}),
    Metric("step_ms", "step_time_sec", "step (ms)", scale=1000.0, best="", digits=0),
)  # fmt: skip


def method_levels(methods):
    levels = {m: {"adv.method": m} for m in methods}
    if "neftune" in levels:
        # NEFTune's noise has its own scale (adv.neftune.alpha / sqrt(L_i * d)); it reads
        # none of the shared threat model's options.
        levels["neftune"].update({"adv.norm": "", "adv.scope": ""})
    if "freeat" in levels:
        # FreeAT makes `replays` optimizer steps per batch; as its paper (and its module)
        # says, it gets 1/replays of the batches, so that its cost matches clean training.
        levels["freeat"]["train.num_steps"] = small.STEPS // FREEAT_REPLAYS
        # The radius ramp counts batches: the same first 40% of training.
        levels["freeat"]["adv.radius_ramp_steps"] = small.RAMP_STEPS // FREEAT_REPLAYS
    return levels


def get_experiment(arg=None):
    variant = parse_variant(arg, pilot=False)
    methods = ("none", "fgm") if variant["pilot"] else METHODS
    return Experiment(
        title="SST-2 (GLUE dev): adversarial training methods, small decoder-only model",
        config=small.CONFIG,
        overrides=small.OVERRIDES,
        axes=(named_axis("method", method_levels(methods)),),
        seeds=(0,) if variant["pilot"] else (0, 1, 2),
        metrics=METRICS,
        table=Table(
            rows=("method",),
            notes=(
                "Under attack: correct both clean and under PGD-5, L2 over the whole example, "
                f"radius {small.EPSILON} (TextAttack's accuracy under attack).",
                "Step time: median seconds per training step (summary.json step_time_sec) "
                "divided by that of the `none` run with the same seed; runs share 2 CPU "
                "cores with --parallel 2 (and, in this run, other work), so ratios are far "
                "noisier than benchmarks/step_cost.py's.",
                f"freeat trains {small.STEPS // FREEAT_REPLAYS} batches with "
                f"{FREEAT_REPLAYS} replays each (the same number of updates and about the "
                "cost of clean training); its step is one batch.",
                "random is R3F as fairseq runs it: U(-1e-5, 1e-5) noise on detached "
                "embeddings and fresh dropout masks in each pass (adv.dropout=fresh), so "
                "its symmetric KL measures dropout's effect too; r4f adds the spectral "
                "normalisation of the classification head. Both gain about 4 points under "
                "attack over clean training here.",
                "neftune adds U(-1, 1) * 5 / sqrt(L_i * d) to each example's embeddings in "
                "training only (Jain et al. 2023; the radius settings do not apply): at "
                "d_model 64 that is about 0.6 per coordinate against embeddings of std "
                "0.02, noise that costs this from-scratch model 3.5 clean points; it was "
                "made for instruction fine-tuning of 7B models (d 4096).",
                "adaptive (base PGD) updates an example's radius when it sees the example "
                "again; 500 steps of 32 see 16,000 of the 67,349 training sentences, none "
                "twice, so here it trains exactly as PGD. It needs several epochs.",
                "smart adds its Bregman proximal term (weight 1) to an EMA teacher: a trust "
                "region meant for fine-tuning a pre-trained model, which slows training "
                "from scratch.",
                "Every perturbation (training and the evaluation attack) leaves padding, "
                "BOS and the classification readout token (the appended EOS) alone "
                "(adv.perturb_special=False); this moved clean training's accuracy under "
                "attack from 57.1 to 59.5 since the table's previous run.",
            ),
        ),
        plots=(
            Plot("accuracy", "bar", "method", ("accuracy", "attack_accuracy")),
            Plot("cost_vs_robustness", "scatter", "step_ratio", ("attack_accuracy",)),
        ),
        scaled_down=small.SCALED_DOWN,
        budget=(
            "measured 2026-12-01: 62 min on 2 CPU cores with --parallel 2, sharing the "
            "machine with test runs (load 4-9), so step times are inflated and their ratios "
            "noisy (the previous run, alone: 38 min, clean step 0.09 s); pilot about 5 min"
        ),
    )
