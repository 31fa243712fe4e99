"""The ``llama-adv`` command: parses arguments, then calls importable functions.

    llama-adv train --config configs/quickstart.py:method=fgm --workdir runs/x \\
        --config.adv.epsilon=0.3
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from llama_adv.errors import UserError


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.a.b=v`` (or ``--config.a.b v``) overrides from other arguments."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" in arg:
                overrides.append(arg[len("--config.") :])
            elif i + 1 < len(argv):
                overrides.append(f"{arg[len('--config.') :]}={argv[i + 1]}")
                i += 1
            else:
                raise UserError(f"{arg} needs a value: {arg}=VALUE.")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _train(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.config import load_config
    from llama_adv.config.validate import validate_config
    from llama_adv.train import distributed

    processes = distributed.parse_options(
        args.coordinator, args.num_processes, args.process_id, args.init_timeout
    )
    config = load_config(args.config, overrides)
    # Every process checks the config before the processes meet: a bad one stops each of
    # them with the same message, none waits for the others.
    validate_config(config)
    distributed.initialize(processes)  # before anything starts JAX's backends
    from llama_adv.train import train_and_evaluate

    # SIGTERM (a scheduler's or `kill`'s stop) takes Ctrl-C's path: checkpoint, then exit 2.
    signal.signal(signal.SIGTERM, _interrupt)
    summary = train_and_evaluate(config, args.workdir, overwrite=args.overwrite)
    evaluation = summary["eval"]
    print(" ".join(f"{k}={v:.4f}" for k, v in evaluation.items() if "accuracy" in k or k == "loss"))


def _import_hf(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.models.hf_import import import_hf_to_dir

    import_hf_to_dir(args.path, args.arch, args.out)


def _export_hf(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.models.hf_export import export_hf

    if overrides:
        raise UserError("export-hf takes no --config.* overrides; it exports the run as trained.")
    export_hf(args.workdir, args.out, step=args.step, overwrite=args.overwrite,
              merged=args.merged)  # fmt: skip


def _quickstart(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.quickstart import run_quickstart

    run_quickstart(args.workdir, method=args.method, overrides=overrides)


def _robustness(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.robustness import compare_runs, run_robustness

    options = dict(suite=args.suite, limit=args.limit, adv_set=args.adv_set,
                   adv_task=args.adv_task, overrides=tuple(overrides))  # fmt: skip
    # The command as parsed: sys.argv differs when main() is called in-process.
    parts = ["llama-adv robustness"]
    for key in ("workdir", "suite", "limit", "adv_set", "adv_task"):
        if getattr(args, key) is not None:
            parts.append(f"--{key.replace('_', '-')} {getattr(args, key)}")
    parts += ["--compare " + " ".join(args.compare)] if args.compare else []
    parts += ["--rerun"] if args.rerun else []
    command = " ".join(parts + [f"--config.{o}" for o in overrides])
    if args.compare:
        out = args.workdir or f"{args.compare[0]}/robustness/compare"
        compare_runs(args.compare, out, command=command, rerun=args.rerun, **options)
        print(f"wrote {out}/compare.md and compare.png")
    elif args.workdir:
        run_robustness(args.workdir, command=command, **options)
        where = "robustness/generation" if args.suite == "generation" else "robustness"
        print(f"wrote {args.workdir}/{where}/table.md")
    else:
        raise UserError("robustness needs --workdir RUN or --compare RUN_A RUN_B ...")


def _generate(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.generation.generate import Sampling, run_generate
    from llama_adv.generation.prompts import read_prompts

    texts = read_prompts(args.prompt, args.prompts_file)
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
    )  # fmt: skip
    rows = run_generate(args.workdir, texts, sampling, step=args.step,
                        overrides=tuple(overrides), out=args.out)  # fmt: skip
    for row in rows:
        print(f"prompt: {row['prompt']}\noutput: {row['generation']}\n")
    if args.out:
        print(f"wrote {args.out}")


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> None:
    import json

    from llama_adv.evaluation import evaluate_run

    result = evaluate_run(args.workdir, split=args.split, file=args.file, step=args.step,
                          overrides=tuple(overrides), out=args.out)  # fmt: skip
    print(json.dumps(result, indent=2))


def _card(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.experiments.run_card import write_run_card

    if overrides:
        raise UserError("card takes no --config.* overrides; it describes the run as trained.")
    command = f"llama-adv card --workdir {args.workdir} --out {args.out}"
    out = write_run_card(args.workdir, args.out, command)
    print((out / "card.md").read_text())
    print(f"wrote {out}/card.md and card.json")


def _command_line(name: str, args: argparse.Namespace, keys: tuple[str, ...]) -> str:
    """The command as parsed (``sys.argv`` differs when main() is called in-process)."""
    parts = [f"llama-adv {name} {args.experiment}"]
    for key in keys:
        value = getattr(args, key)
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):  # a repeated flag (--only A --only B)
            parts += [f"{flag} {shlex.quote(str(v))}" for v in value]
        elif value not in (None, False):
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _sweep(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.experiments.runner import run_sweep

    if overrides:
        raise UserError("sweep takes no --config.* overrides; put them in the experiment file.")
    command = _command_line("sweep", args, ("runs_dir", "parallel", "only", "dry_run"))
    run_sweep(args.experiment, runs_dir=args.runs_dir, parallel=args.parallel,
              dry_run=args.dry_run, only=args.only, command=command)  # fmt: skip


def _table(args: argparse.Namespace, overrides: list[str]) -> None:
    from llama_adv.experiments.report import write_report

    if overrides:
        raise UserError("table takes no --config.* overrides.")
    command = _command_line("table", args, ("runs_dir", "out"))
    folder = write_report(args.experiment, runs_dir=args.runs_dir, out=args.out, command=command)
    print((folder / "table.md").read_text())
    print(f"wrote {folder}/ (table.md, table.csv, table.tex, plots, manifest.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llama-adv", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train and evaluate one run")
    train.add_argument("--config", required=True, help="configs/x.py[:variant] or config.json")
    train.add_argument("--workdir", required=True, help="run directory (resumed if present)")
    train.add_argument(
        "--overwrite", action="store_true",
        help="delete everything in --workdir (another run, broken checkpoints) and start again",
    )  # fmt: skip
    multi = train.add_argument_group(
        "multi-process runs", "one `train` per process, the same command but --process-id; "
        "under SLURM, Open MPI, a Cloud TPU pod or Kubernetes they are found automatically",
    )  # fmt: skip
    multi.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's address and a free port, the same in every process",
    )
    multi.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N-1")
    multi.add_argument(
        "--init-timeout", type=float, default=60, metavar="SECONDS",
        help="how long the processes wait for each other at start (default 60)",
    )  # fmt: skip
    train.set_defaults(run=_train)

    quick = commands.add_parser("quickstart", help="clean vs adversarial on the synthetic task")
    quick.add_argument("--workdir", default="runs/quickstart")
    quick.add_argument("--method", default="fgm", help="adversarial method to compare")
    quick.set_defaults(run=_quickstart)

    hf = commands.add_parser("import-hf", help="convert a Hugging Face checkpoint directory")
    hf.add_argument("--arch", required=True, choices=("llama", "t5"))
    hf.add_argument("--path", required=True, help="config.json + *.safetensors directory")
    hf.add_argument("--out", required=True, help="writes config.json and params.msgpack")
    hf.set_defaults(run=_import_hf)

    export = commands.add_parser("export-hf", help="write a run as a Hugging Face checkpoint")
    export.add_argument("--workdir", required=True, help="the trained run")
    export.add_argument("--out", required=True, help="writes config.json + model.safetensors")
    export.add_argument(
        "--step", type=int, help="checkpoint step (default: the best, else the latest)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.add_argument(
        "--merged", action="store_true",
        help="LoRA runs: write the merged weights only (default: the base + a PEFT adapter/)",
    )  # fmt: skip
    export.set_defaults(run=_export_hf)

    rob = commands.add_parser("robustness", help="attack a trained run's best checkpoint")
    rob.add_argument("--workdir", help="the run (with --compare: where the comparison goes)")
    rob.add_argument(
        "--suite",
        help="default | embedding | discrete | noise | advset (the --adv-set alone) | "
        "generation (chat runs: GCG and embedding attacks on replies)",
    )
    rob.add_argument("--limit", type=int, help="attack only the first N examples")
    rob.add_argument("--compare", nargs="+", metavar="RUN", help="several runs, one table")
    rob.add_argument("--rerun", action="store_true", help="--compare: attack runs again")
    rob.add_argument(
        "--adv-set", help="AdvGLUE-format .json or text<TAB>label .tsv file (any suite)"
    )
    rob.add_argument("--adv-task", help="task key in an AdvGLUE file (default sst2)")
    rob.set_defaults(run=_robustness)

    gen = commands.add_parser("generate", help="continue text prompts with a trained run")
    gen.add_argument("--workdir", required=True, help="the trained run (task lm or seq2seq)")
    gen.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeatable")
    gen.add_argument(
        "--prompts-file", metavar="F",
        help="one prompt per line, or .jsonl objects with a prompt (or instruction) field",
    )  # fmt: skip
    gen.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    gen.add_argument(
        "--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sampling"
    )
    gen.add_argument("--top-k", type=int, default=0, help="sample among the K likeliest (0: all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--batch-size", type=int, default=8, help="prompts decoded at once")
    gen.add_argument("--step", type=int, help="checkpoint step (default: the best, else latest)")
    gen.add_argument("--out", metavar="F.jsonl", help="also write the generations here")
    gen.set_defaults(run=_generate)

    ev = commands.add_parser("evaluate", help="a trained run's metrics on a split or a file")
    ev.add_argument("--workdir", required=True, help="the trained run")
    where = ev.add_mutually_exclusive_group()
    where.add_argument("--split", help="a split of the run's dataset (default: eval.split)")
    where.add_argument("--file", help="a file in the dataset's format (see the README)")
    ev.add_argument("--step", type=int, help="checkpoint step (default: the best, else latest)")
    ev.add_argument("--out", metavar="F.json", help="also write the result here")
    ev.set_defaults(run=_evaluate)

    card = commands.add_parser("card", help="model, data, tokens, evaluations of one run")
    card.add_argument("--workdir", required=True, help="a finished run")
    card.add_argument("--out", required=True, help="folder for card.md and card.json")
    card.set_defaults(run=_card)

    sweep = commands.add_parser("sweep", help="run (or resume) every run of an experiment file")
    sweep.add_argument("experiment", help="experiments/<name>.py[:variant]")
    sweep.add_argument("--runs-dir", default="runs", help="runs go to RUNS_DIR/<name>/<run id>")
    sweep.add_argument("--parallel", type=int, default=1, help="runs at once on CPU")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sweep.add_argument(
        "--only", action="append", metavar="PATTERN",
        help="run ids matching a glob, or containing the text; repeat for several",
    )  # fmt: skip
    sweep.set_defaults(run=_sweep)

    table = commands.add_parser("table", help="tables, plots and manifest of an experiment")
    table.add_argument("experiment", help="experiments/<name>.py[:variant]")
    table.add_argument("--runs-dir", default="runs", help="where the sweep put its runs")
    table.add_argument("--out", default="results", help="writes OUT/<name>/")
    table.set_defaults(run=_table)
    return parser


# Commands that compile nothing themselves (a sweep's runs are `train` processes).
NO_COMPILATION = ("import-hf", "card", "sweep", "table")


def main(argv: list[str] | None = None) -> int:
    # TensorFlow (under tensorflow-datasets) logs from C++ on import; set before it loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else argv
    try:
        rest, overrides = _split_overrides(argv)
        args = build_parser().parse_args(rest)
        if args.command not in NO_COMPILATION:
            from llama_adv.compile_cache import enable_compile_cache

            enable_compile_cache()
        args.run(args, overrides)
    except UserError as error:
        print(f"llama-adv: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
