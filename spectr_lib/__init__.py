"""spectr_lib: SpecTr multi-draft speculative decoding (Sun et al., NeurIPS 2023). p = target, q = draft."""
from .engine.acceptance import draft_acceptance
from .engine.auto import predict_tokens_per_second
from .engine.decoder import generate, pair_costs
from .engine.metrics import Generation
from .models.load import ModelPair, load_pair, load_target, tiny_pair

__all__ = ["Generation", "ModelPair", "draft_acceptance", "generate", "load_pair", "load_target", "pair_costs",
           "predict_tokens_per_second", "tiny_pair"]
