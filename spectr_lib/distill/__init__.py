"""Training drafts from the target: prompt sets, on-policy answer data, teacher passes and training.

Never imports the decoding engine or the tools; `python -m spectr_lib.distill --help` is the entry point.
The stages' functions raise `StageError` (a ValueError) for work they cannot do as asked, with what to do instead;
the command lines print its message and exit with status 1.
"""


class StageError(ValueError):
    """A training stage refused its inputs (missing data, a checkpoint of another draft, options that conflict)."""
