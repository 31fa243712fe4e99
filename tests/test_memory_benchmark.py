"""benchmarks/memory.py on a tiny preset: it compiles the real train step for abstract
shapes and writes the rows the results table is made of."""

import json

from _benchmarks import load_benchmark

KEYS = {"preset", "lora_rank", "method", "devices", "seq_len", "remat", "bytes_per_device"}


def test_memory_benchmark_writes_one_row_per_setting(repo, tmp_path):
    bench = load_benchmark("memory")
    argv = ["--presets", "tiny", "--lora-ranks", "0,4", "--methods", "fgm", "--seq-len", "16",
            "--devices", "4", "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    rows = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert len(rows) == 4  # 2 ranks x remat off/on
    for row in rows:
        assert set(row) >= KEYS
        assert row["devices"] == 4 and row["seq_len"] == 16
        assert row["bytes_per_device"] > 0
    by = {(r["lora_rank"], r["remat"]): r for r in rows}
    # LoRA holds Adam state for the adapters only: far smaller step arguments.
    assert by[4, False]["argument_bytes"] < by[0, False]["argument_bytes"] / 2
    assert "| tiny |" in (tmp_path / "memory.md").read_text()
