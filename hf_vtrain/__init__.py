"""hf_vtrain: training toolkit for video models on the Hugging Face stack."""

__version__ = "0.1.0"


def load_corpus(recipe, **overrides):
    """The corpus a recipe trains on (THUMOS-14, UCF-Crime, NTU-60 or FRED, by the recipe's `task`) as typed
    `datasets`, validated as a run validates it: `hf_vtrain.load_corpus("recipes/adatad_thumos14_demo.yaml")`."""
    from .tasks import load_corpus as _load_corpus

    return _load_corpus(recipe, **overrides)
