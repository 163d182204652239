"""Speculative decoding rounds: drafters (draft side), verifiers (target side), the Hugging Face cache
helpers, the decoder loop and teacher-forced acceptance."""
