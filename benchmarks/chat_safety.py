"""Chat-model adversarial training on ``synthetic_chat``: instruction fine-tuning (SFT)
against CAT and LAT, judged by GCG and the embedding-space attack on the harmful
behaviours of the validation split, and by utility.

    LLAMA_ADV_DATA_DIR=../shared/data python benchmarks/chat_safety.py --out results/chat_safety

Each (method, seed) trains ``configs/chat_<method>.py`` into ``RUNS/<method>_s<seed>``
and runs ``llama-adv robustness --suite generation`` on it; both steps are skipped when
their outputs exist, so an interrupted run resumes. Writes ``OUT/results.json`` (every
run's numbers) and ``OUT/table.md`` (mean and standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = {"sft": "configs/chat_sft.py", "cat": "configs/chat_cat.py", "lat": "configs/chat_lat.py"}
# GCG's budget, below nanoGCG's 250 x 512 x 256 (a 42-word vocabulary has fewer than 256
# candidates per position): 100 steps of width 128 took 7.5 min per run on 2 cores, and
# neither attack reached a target on the SFT model; 50 x 64 keeps GCG at a few minutes. The
# embedding attack gets 1,000 signed steps of 0.001 (Schwinn et al.'s 100 left the target
# loss at 1.8 on the SFT model: its steps are sized for LLM embeddings).
ATTACK = {"gcg_steps": 50, "gcg_search_width": 64, "gcg_topk": 32, "embedding_steps": 1000}


def _run(command: list[str]) -> float:
    """Runs a ``llama-adv`` command; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llama_adv", *command], check=True, cwd=REPO)
    return time.perf_counter() - start


def run_one(method: str, seed: int, runs: Path) -> dict:
    workdir = runs / f"{method}_s{seed}"
    times = {}
    if not (workdir / "summary.json").is_file():
        times["train_seconds"] = _run(
            ["train", "--config", METHODS[method], "--workdir", str(workdir),
             f"--config.train.seed={seed}", "--config.train.progress_bar=False"]
        )  # fmt: skip
    report = workdir / "robustness" / "generation" / "results.json"
    if not report.is_file():
        overrides = [f"--config.robustness.generation.{k}={v}" for k, v in ATTACK.items()]
        times["attack_seconds"] = _run(
            ["robustness", "--workdir", str(workdir), "--suite", "generation", *overrides]
        )
    summary = json.loads((workdir / "summary.json").read_text())
    attacks = json.loads(report.read_text())
    return {
        "method": method,
        "seed": seed,
        "workdir": str(workdir),
        "eval_loss": summary["eval"]["loss"],
        "clean_asr": attacks["clean"]["asr_target"],
        "gcg_asr": attacks["attacks"]["gcg"]["asr_target"],
        "gcg_asr_no_refusal": attacks["attacks"]["gcg"]["asr_refusal"],
        "gcg_final_loss": attacks["attacks"]["gcg"]["mean_final_loss"],
        "embedding_asr": attacks["attacks"]["embedding"]["asr_target"],
        "embedding_final_loss": attacks["attacks"]["embedding"]["mean_final_loss"],
        "embedding_success_step": attacks["attacks"]["embedding"]["mean_success_step"],
        "heldout_perplexity": attacks["utility"]["heldout_perplexity"],
        "clean_refusal_rate": attacks["utility"]["clean_refusal_rate"],
        "num_behaviours": attacks["num_behaviours"],
        "commit": attacks["provenance"]["commit"],
        **times,
    }


COLUMNS = (
    ("eval_loss", "eval loss (replies)"),
    ("heldout_perplexity", "held-out perplexity"),
    ("clean_refusal_rate", "refusals on utility prompts"),
    ("clean_asr", "harmful target, clean prompt"),
    ("gcg_asr", "GCG ASR"),
    ("gcg_final_loss", "GCG target loss"),
    ("embedding_asr", "embedding-attack ASR"),
    ("embedding_final_loss", "embedding target loss"),
)


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(rows: list[dict], command: str) -> str:
    from llama_adv.robustness.report import provenance

    where = provenance(command)
    lines = [
        "# Chat-model adversarial training on synthetic_chat: SFT vs CAT vs LAT",
        "",
        f"- command: `{command}`",
        f"- commit of the runs and attacks: `{', '.join(sorted({r['commit'] for r in rows}))}`",
        f"- hardware: {where['hardware']} ({len({r['seed'] for r in rows})} seeds; "
        "mean ± std over them)",
        f"- attacks: GCG {ATTACK['gcg_steps']} steps, search width {ATTACK['gcg_search_width']},"
        f" top-k {ATTACK['gcg_topk']} (nanoGCG: 250 / 512 / 256); embedding attack "
        f"{ATTACK['embedding_steps']} signed steps of 0.001 on a 20-token suffix (Schwinn et "
        "al.: 100); ASR = greedy reply starts with "
        f"the harmful target; {rows[0]['num_behaviours']} harmful behaviours of the validation "
        "split",
        "",
        "| method | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if mine:
            cells = [_cell([r[key] for r in mine]) for key, _ in COLUMNS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


NOTES = """
What the table shows, and does not: a 0.1M-parameter decoder trained from scratch for 600
steps on a toy task, so directions, not magnitudes. Nothing reaches the harmful target
from a clean prompt. Under GCG no run's reply starts with the target within the budget,
but the target loss GCG reaches rises from SFT to CAT to LAT: both defences make the
discrete attack's job harder. The unbounded embedding-space attack on a free suffix (the
threat model of Schwinn et al. 2024) breaks every model; CAT, trained against a small
bounded perturbation of the prompt tokens, is broken more often than SFT here, LAT about as
often: robustness to the training threat does not carry over to an unbounded suffix, the
point Schwinn et al. make about fixed-attack defences. Utility cost: the reply loss and
held-out perplexity rise slightly for both defences; utility prompts are almost never
refused.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/chat_safety")
    parser.add_argument("--runs", default="runs/chat_safety")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    rows = [run_one(m, s, REPO / args.runs) for m in args.methods for s in args.seeds]
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    command = ("python benchmarks/chat_safety.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, command)
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    (out / "table.md").write_text(text + NOTES)
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
