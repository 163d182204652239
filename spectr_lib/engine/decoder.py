"""The K-draft SpecTr decoder's entry point: `generate(pair, prompt, method=...)` checks the request once
(engine/request.py) and runs it round by round (engine/session.py). Every method (engine/methods.py) returns text
distributed exactly as the (warped) target would produce it.
"""
from __future__ import annotations

from ..models.load import ModelPair
from .calibration import check_agreement, load_costs
from .costs import Costs
from .inputs import check_pair
from .methods import method_names
from .metrics import Generation
from .request import make_request
from .session import Session

METHODS = method_names()  # "ar", "block", "sps", "kseq", "rrs", "rrs_wor", "sampled", "optimal" (live: method_names())


def generate(pair: ModelPair, prompt, *, method: str = "kseq", k: int | str | None = None, L: int | str = 4,
             max_new_tokens: int = 128, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, verify: str | None = None,
             eos_token_id: int | list[int] | None = None, costs: Costs | None = None, lookup: bool | None = None,
             draft_temperature: float | None = None, tree: bool | None = None,
             continue_final_message: bool = False) -> Generation:
    """Generate up to max_new_tokens after the prompt; the output is distributed exactly as the (warped)
    target's own sampling (SpecTr, Sun et al. 2023, §4; every method's exactness is tested by chi-square).

    prompt: a string (chat template applied), a list of chat messages {"role", "content"}, a 1-D sequence of
    token ids or a [T] / [1, T] integer tensor. A chat ending in an assistant message gets a new assistant turn by
    default; continue_final_message=True continues that message instead (Hugging Face's pipeline default there).
    method: "ar" (the target alone), "sps" (k = 1), "block" (block verification of one draft, Sun et al., ICLR
    2025), "kseq" (SpecTr), "rrs" (SpecInfer), "rrs_wor" (RRS without replacement, Jeon et al. 2024), "sampled"
    (a draft kept only if it is the target's own sample, theory/sampled.py) or "optimal" (the optimal rule for
    i.i.d. drafts, acceptance α*, theory/optimal.py); `METHODS` lists them
    (engine/methods.py). Each round drafts k drafts (default 8; 1 for "sps"/"block") of min(L, tokens still allowed
    − 1) tokens ("ar" ignores L); a round with nothing left to draft is a plain target step. Generation ends in
    the round that emits a stop token: eos_token_id (an id or several; default every EOS id of the tokenizer and
    the target's generation config).
    verify: the verification form, a name in engine.verifiers.VERIFIERS ("tree": one row holding the drafts'
    prefix tree; "batch": one row per draft; "static": the tree on one preallocated, position-indexed cache; None:
    the device's default, `default_form`); tree=True / False is its deprecated spelling. seed: an integer in [0, 2**32) (None: a random one).

    k="auto" (methods that take any k: k ∈ {1, 2, 4, 8}) and L="auto" (L ∈ 0..8, 0 a plain target step) choose
    each round's configuration with the most predicted tokens/s (engine/auto.py) from the pair's calibrated
    costs (`costs`, default `pair_costs(pair)`: measured once, about a minute, then cached), corrected by the
    acceptance and the measured time of this generation's earlier rounds; the choice depends only on past rounds,
    so the output law is unchanged. A generation whose rounds and plain steps took over 1.5× (or under 1/1.5) the
    time the pair's own calibration predicted, over at least a second, drops the cached calibration, with a
    RuntimeWarning: the next `pair_costs` measures again.

    lookup=True mixes each drafting step's q with a point mass on the token that followed the latest earlier
    occurrence of the sequence's last n ≥ 2 tokens (prompt lookup, engine/lookup.py); draft_temperature τ samples
    rounds of k drafts from softmax(draft logits / (τ·temperature)). None, for both, takes the draft's own setting
    (`pair.draft_settings`, from its spectr_draft.json: the default draft has lookup on and τ = 0.85 for one
    draft, 1.1 for eight, chosen on held-out prompts). Either keeps the output law exact (drafts are verified
    against the q they came from).

    Greedy (temperature 0): in float32 the output equals the target's greedy output token for token. In a bf16
    pair the head runs in bf16 by default (`pair.head_dtype`), whose logits can tie, and a tie can break another
    way in a call of another shape; `load_pair(..., head_dtype="float32")` removes those ties, and the output
    then equals the target's greedy output except at genuine near-ties of the hidden state.

    Raises TypeError / ValueError, before any model call, for a bad argument or prompt, or a sequence longer than
    the models' context (prompt + max_new_tokens must fit).
    """
    request = make_request(pair, prompt, method=method, k=k, L=L, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, verify=verify, tree=tree,
                           eos_token_id=eos_token_id, costs=costs, lookup=lookup, draft_temperature=draft_temperature,
                           continue_final_message=continue_final_message)
    if request.auto and costs is None:
        costs = pair_costs(pair)
    session = Session(pair, request, costs)
    generation = session.run()
    if session.auto is not None:  # rounds that disagree with the calibration: measure it again next time
        check_agreement(costs, pair, session.auto.measured_ms, session.auto.predicted_ms)
    return generation


def pair_costs(pair: ModelPair, recalibrate: bool = False, progress: bool = True) -> Costs:
    """The pair's calibrated cost model (engine/costs.py), measured on first use (about a minute for the
    embedded pair on a CPU, with a progress bar) and cached under the user cache folder; recalibrate=True
    measures again. Raises ValueError for a pair without a draft."""
    check_pair(pair)
    return load_costs(pair, recalibrate, progress)
