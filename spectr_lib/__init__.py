"""spectr_lib: SpecTr multi-draft speculative decoding (Sun et al., NeurIPS 2023). p = target, q = draft."""
from .engine.acceptance import draft_acceptance
from .engine.decoder import Generation, generate
from .models.load import ModelPair, load_pair, load_target, tiny_pair

__all__ = ["Generation", "ModelPair", "draft_acceptance", "generate", "load_pair", "load_target", "tiny_pair"]
