"""Training drafts from the target: prompt sets, on-policy answer data, teacher passes and training.

Never imports the decoding engine or the tools; `python -m spectr_lib.distill --help` is the entry point.
"""
