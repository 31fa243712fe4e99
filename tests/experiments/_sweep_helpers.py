"""Paths shared by the sweep and report tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.py"
