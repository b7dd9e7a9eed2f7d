"""Writes K hard-negative captions per region caption into FG-CLIP-format training records (`region_negatives`), as
FG-CLIP's hard-negative loss needs them (hf_vtrain/data/hard_negatives.py says how they are made).

    python scripts/make_hard_negatives.py data/ucf_crime/ucf_fgclip_train.json --out data/ucf_crime/ucf_fgclip_train_hn.json
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_vtrain.data.hard_negatives import main  # noqa: E402
from hf_vtrain.exit_codes import run_tool  # noqa: E402

if __name__ == "__main__":
    run_tool(main)
