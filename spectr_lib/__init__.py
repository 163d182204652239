"""spectr_lib: SpecTr multi-draft speculative decoding (Sun et al., NeurIPS 2023). p = target, q = draft."""
from .models import ModelPair, load_pair, load_target, tiny_pair

__all__ = ["ModelPair", "load_pair", "load_target", "tiny_pair"]
