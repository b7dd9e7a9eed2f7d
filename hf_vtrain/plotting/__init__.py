"""Pictures of runs: curves shared by every task (curves.py), one module per task, run comparisons (compare.py)."""
