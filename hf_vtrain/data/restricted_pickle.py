"""Reading pickles a user hands us (PYSKL's NTU annotation files) without running what they hold.

`pickle.load` calls any function a file names: a downloaded `.pkl` can run code. `load_restricted` only rebuilds
builtin containers, strings, numbers and numpy arrays / scalars / dtypes; any other global the file names is refused
before anything is called, with its module and name in the message.
"""

from __future__ import annotations

import io
import os
import pickle

# What numpy's own pickling of arrays, dtypes and scalars calls (numpy 1.x and 2.x module names; `_codecs.encode`
# carries array bytes in protocol-2 files).
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class RefusedPickleError(pickle.UnpicklingError):
    """The file names a global outside ALLOWED_GLOBALS; nothing of it was called."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, source: str):
        super().__init__(handle)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS or (module.startswith("numpy") and name == "dtype"):
            return super().find_class(module, name)
        raise RefusedPickleError(
            f"{self.source}: holds an object of type {module}.{name}, which a pickle of annotations (dicts, lists, "
            f"strings, numbers, numpy arrays) does not hold; refused without running it. Re-save the file with "
            f"only those types")

    def persistent_load(self, pid):
        raise RefusedPickleError(f"{self.source}: holds a persistent reference ({pid!r}); refused")


def load_restricted(path: str | os.PathLike):
    """The object in the pickle file `path`, built from allowed types only (RefusedPickleError otherwise); a file
    that is no pickle is a ValueError naming it."""
    source = os.fspath(path)
    with open(source, "rb") as handle:
        data = handle.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except RefusedPickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None
