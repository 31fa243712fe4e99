"""A TFDS name that needs a download fails within seconds offline, and a data error is one
line on stderr: no TensorFlow, absl or tqdm output before it."""

import subprocess
import sys
import time

SCRIPT = """
import sys
from llama_adv.data import tfds_source
tfds_source._network_reachable = lambda *a, **k: False  # as on a machine with no network
from llama_adv.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_offline_tfds_name_fails_fast_with_one_line(repo, tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "train", "--config", "configs/quickstart.py:tiny",
         "--workdir", str(tmp_path / "run"), "--config.data.name=glue/cola",
         f"--config.data.cache_dir={tmp_path / 'cache'}"],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "network is unreachable" in lines[0], result.stderr
    assert "'glue/cola'" in lines[0]
    assert time.monotonic() - start < 120  # TFDS's own retries took 209 s
    assert not (tmp_path / "run").exists()
