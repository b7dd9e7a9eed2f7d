"""`python -m tests.ranked_call MODULE FUNCTION ARG...` runs FUNCTION(rank, world_size, *ARGS) of a test module on one
rank, the rank and the world size read from torchrun's variables: what `spawn_two_ranks` starts on each of its ranks
through the zygote (tests/zygote.py), where torch.multiprocessing.spawn would start two fresh interpreters."""

import importlib
import os
import sys

if __name__ == "__main__":
    module, name, *args = sys.argv[1:]
    function = getattr(importlib.import_module(module), name)
    function(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), *args)
