"""Compares experiments: prints each run's recipe differences (keys of recipe_resolved.yaml whose values differ) and
best/final evaluation metric (from trainer_state.json's log history), and plots their loss and metric curves on
shared axes.

    python scripts/compare_runs.py outputs/run_a outputs/run_b ... [--out compare.png] [--metric eval_average_mAP]
        [--lower-is-better]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_vtrain.exit_codes import run_tool  # noqa: E402
from hf_vtrain.plotting.compare import format_comparison, load_run, pick_metric, plot_comparison  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run output folders (recipe_resolved.yaml + trainer_state.json)")
    parser.add_argument("--out", default="compare.png", help="PNG with the curves")
    parser.add_argument("--metric", help="evaluation metric to rank by (default: eval_average_mAP when logged)")
    parser.add_argument("--lower-is-better", action="store_true", help="for loss-like metrics")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    metric = pick_metric(runs, args.metric)
    print(format_comparison(runs, metric, args.lower_is_better))
    png = plot_comparison(runs, metric, args.out)
    print(f"\ncurves: {png}")
    return {"metric": metric, "png": png}


if __name__ == "__main__":
    run_tool(main)
