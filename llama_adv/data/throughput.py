"""Measures the input pipeline's throughput (examples/s) on a dataset, on CPU.

    LLAMA_ADV_DATA_DIR=../shared/data python -m llama_adv.data.throughput sst2 --max-length 256

Reports the (cached) load time and the rate at which ``TrainStream.batch(k)`` delivers
training batches, to compare with the ``examples_per_sec`` a training run logs.
"""

from __future__ import annotations

import argparse
import time

from llama_adv.config import get_default_config
from llama_adv.data import load_dataset
from llama_adv.data.pipeline import TrainStream


def measure(name: str, max_length: int, batch: int, batches: int, buckets: tuple[int, ...],
            tokenizer: str = "byte") -> dict[str, float]:  # fmt: skip
    config = get_default_config().data
    config.name, config.max_length, config.tokenizer = name, max_length, tokenizer
    config.length_buckets = buckets
    start = time.perf_counter()
    split = load_dataset(config).split("train")
    loaded = time.perf_counter() - start
    stream = TrainStream(split, batch, seed=0)
    stream.batch(0)  # grain's first shuffle builds its state
    start = time.perf_counter()
    for k in range(1, batches + 1):
        stream.batch(k)
    rate = batches * batch / (time.perf_counter() - start)
    return {"examples": len(split), "load_sec": loaded, "examples_per_sec": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--buckets", default="", help="comma-separated, e.g. 64,128")
    parser.add_argument("--tokenizer", default="byte")
    args = parser.parse_args()
    buckets = tuple(int(b) for b in args.buckets.split(",") if b)
    result = measure(args.dataset, args.max_length, args.batch, args.batches, buckets,
                     args.tokenizer)  # fmt: skip
    print(
        f"{args.dataset}: {result['examples']} train examples, loaded in "
        f"{result['load_sec']:.1f}s; pipeline {result['examples_per_sec']:,.0f} examples/s "
        f"(batch {args.batch}, max_length {args.max_length}, buckets {buckets or 'none'})"
    )


if __name__ == "__main__":
    main()
