"""Prepares a run's dataset (TFDS preparation, tokenizer training) and nothing else.

The sweep runs it once per distinct dataset before starting runs in parallel:

    python -m llama_adv.experiments.prepare --config configs/x.py[:variant] --config.k=v
"""

from __future__ import annotations

import argparse
import sys

from llama_adv.errors import UserError


def prepare(spec: str, overrides: list[str]) -> None:
    """Loads the config and touches its train and evaluation splits, so that everything
    cached on first use (prepared data, tokenizer) exists afterwards."""
    from llama_adv.config import load_config
    from llama_adv.data import load_dataset

    config = load_config(spec, overrides)
    dataset = load_dataset(config.data)
    for split in (config.data.train_split, config.eval.split):
        print(f"{config.data.name}[{split}]: {len(dataset.split(split))} examples")


def main(argv: list[str] | None = None) -> int:
    """``--config SPEC`` then ``--config.key=value`` overrides (as the sweep writes them)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m llama_adv.experiments.prepare")
    parser.add_argument("--config", required=True)
    args, rest = parser.parse_known_args(argv)
    try:
        bad = [a for a in rest if not a.startswith("--config.") or "=" not in a]
        if bad:
            raise UserError(f"expected --config.key=value overrides, got {bad}")
        prepare(args.config, [a[len("--config.") :] for a in rest])
    except UserError as error:
        print(f"llama-adv: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
