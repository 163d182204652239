"""Loading models, knowing no decoding: the embedded target, Hugging Face pairs, tiny random pairs, and the
project's feature draft."""
