"""hf_vtrain: training toolkit for video models on the Hugging Face stack."""

__version__ = "0.1.0"
