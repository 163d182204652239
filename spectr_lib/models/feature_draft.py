"""A feature draft (EAGLE-style): one transformer layer (or a few, `num_layers`) that reads the target's last
hidden state h_{t-1} and the embedding of token x_t, predicts h_t, and reads q(x_{t+1}) out through the
target's own head.

It learns from little data because the target's features already carry the context. The embedding and the
head are the target's (shared at load time, never stored twice); the head may keep only the most frequent
tokens (FR-Spec style), which cuts the draft's cost; q is then 0 elsewhere, and selection stays exact because
verification uses the target's full distribution.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .matmul_order import head_matmul
from .draft_files import CONFIG_NAME, WEIGHTS_NAME, check_shapes
from ..files import write_text


@dataclass
class FeatureDraftConfig:
    """Shape of the draft layer; matches the target's hidden size, heads and RoPE."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    head_tokens: int  # rows kept in the output head (== vocab_size: all)
    kind: str = "feature_draft"
    # indices into the target's hidden_states (0 = embeddings, -1 = the last, normed state the head reads) that
    # the draft reads, concatenated; (-1,) is the original design, several layers are fused (EAGLE-3 style)
    feature_layers: tuple[int, ...] = (-1,)
    # decoder layers of the draft (1: the EAGLE design; configs saved before this field existed have one)
    num_layers: int = 1

    def __post_init__(self):
        self.feature_layers = tuple(int(i) for i in self.feature_layers)
        if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or self.num_layers < 1:
            raise ValueError(f"num_layers must be a whole number ≥ 1, got {self.num_layers!r}")

    @classmethod
    def from_target(cls, target_config, head_tokens: int, feature_layers=(-1,), num_layers: int = 1) -> "FeatureDraftConfig":
        """Draft layers shaped like one layer of the target, reading the given hidden_states indices.
        Raises ValueError for indices the target lacks or num_layers < 1."""
        c = target_config
        rope = getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        n = c.num_hidden_layers
        if not feature_layers or any(not -n - 1 <= int(i) <= n for i in feature_layers):
            raise ValueError(f"feature_layers {feature_layers}: give hidden_states indices in [-{n + 1}, {n}] "
                             f"(0 = embeddings, {n} or -1 = the last state), e.g. (4, 16, -1)")
        return cls(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, float(rope),
                   float(c.rms_norm_eps), c.vocab_size, head_tokens or c.vocab_size,
                   feature_layers=tuple(int(i) for i in feature_layers), num_layers=num_layers)


class KVCache:
    """Keys and values [B, H, T, D] of each draft layer; crop and row selection make roll-back free."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []  # one entry per layer, in layer order
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return 0 if not self.keys else self.keys[0].shape[2]

    @property
    def rows(self) -> int:
        """Batch rows held (0 when empty)."""
        return 0 if not self.keys else self.keys[0].shape[0]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add keys and values [B, H, T, D] of layer `layer` (0-based); returns all of that layer's."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], 2)
            self.values[layer] = torch.cat([self.values[layer], v], 2)
        return self.keys[layer], self.values[layer]

    def crop(self, n: int) -> None:
        """Keep the first n positions."""
        self.keys = [k[:, :, :n] for k in self.keys]
        self.values = [v[:, :, :n] for v in self.values]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the given batch rows."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding of x [B, H, T, D] at positions pos [T] (Llama's half-split layout)."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = pos.to(torch.float32)[:, None] * inv[None]  # (T, D/2)
    cos, sin = torch.cat([ang, ang], -1).cos().to(x.dtype), torch.cat([ang, ang], -1).sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class DraftLayer(nn.Module):
    """A pre-norm Llama decoder layer (GQA attention + SwiGLU MLP) with an explicit cache."""

    def __init__(self, c: FeatureDraftConfig):
        super().__init__()
        d, hd = c.hidden_size, c.hidden_size // c.num_heads
        self.c, self.hd = c, hd
        self.input_layernorm = nn.RMSNorm(d, eps=c.rms_norm_eps)
        self.q_proj = nn.Linear(d, c.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, c.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, c.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.num_heads * hd, d, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=c.rms_norm_eps)
        self.gate_proj = nn.Linear(d, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, d, bias=False)

    def qkv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries [B, H, T, D], keys and values [B, H_kv, T, D] of inputs x [B, T, d] at positions pos [T]."""
        B, T, _ = x.shape
        c, hd = self.c, self.hd
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, c.num_heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, c.num_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, c.num_kv_heads, hd).transpose(1, 2)
        return rope(q, pos, self.c.rope_theta), rope(k, pos, self.c.rope_theta), v

    def attend(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        """The layer's output [B, T, d] for inputs x, given their queries and the keys/values they may see."""
        rep = self.c.num_heads // self.c.num_kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.o_proj(a.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cache: KVCache | None, index: int = 0) -> torch.Tensor:
        """Outputs [B, T, d] for inputs x [B, T, d] at positions pos [T]; this layer's keys go to cache entry
        `index` (its position in the draft's stack)."""
        T = x.shape[1]
        q, k, v = self.qkv(x, pos)
        if cache is not None:
            k, v = cache.append(index, k, v)
        past = k.shape[2] - T
        if T == 1:
            mask = None  # one new query sees every cached position
        else:  # causal with a cached prefix: query i sees keys ≤ past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        return self.attend(x, q, k, v, mask)


class FeatureDraft(nn.Module):
    """fc([g_{t-1}; e(x_t)]) → layer(s) → norm = f_t; logits = target head (kept rows) · f_t.

    g is the target's last hidden state h (`feature_layers == (-1,)`) or, with several layers, the fusion
    `fuse([norm(h^(l)) for l in feature_layers])` of low, middle and high layers (EAGLE-3, Li et al. 2025, §3;
    the last state is normed already and enters as is).
    Deeper draft steps feed the draft's own output f [.., d] in place of g. With `num_layers` > 1 the first
    layer is `layer` (so one-layer drafts' weights keep their names) and the others are `extra_layers`.
    """

    def __init__(self, c: FeatureDraftConfig, embed: nn.Embedding, head_weight: torch.Tensor, head_ids: torch.Tensor):
        super().__init__()
        self.config = c
        d = c.hidden_size
        n = len(c.feature_layers)
        if n > 1:  # RMSNorm per raw layer (middle layers reach norms of ~10⁴; -1 is normed already), then a linear map
            self.fuse_norms = nn.ModuleList(nn.Identity() if i == -1 else nn.RMSNorm(d, eps=c.rms_norm_eps)
                                            for i in c.feature_layers)
            self.fuse = nn.Linear(n * d, d, bias=False)
        self.fc = nn.Linear(2 * d, d, bias=False)
        self.layer = DraftLayer(c)
        self.extra_layers = nn.ModuleList(DraftLayer(c) for _ in range(c.num_layers - 1))
        self.norm = nn.RMSNorm(d, eps=c.rms_norm_eps)
        self.embed = embed  # the target's, shared and frozen
        self.register_buffer("head_ids", head_ids.long(), persistent=False)
        self.register_buffer("head", head_weight[head_ids.long()].detach().clone(), persistent=False)

    def own_parameters(self):
        """The weights the draft owns (not the target's embedding)."""
        return [p for n, p in self.named_parameters() if not n.startswith("embed.")]

    @property
    def layers(self) -> list[DraftLayer]:
        """The decoder layers in order (the first is `layer`)."""
        return [self.layer, *self.extra_layers]

    @property
    def feature_size(self) -> int:
        """Width of the target features the draft reads: hidden size × number of feature layers."""
        return self.config.hidden_size * len(self.config.feature_layers)

    def fused(self, feats: torch.Tensor) -> torch.Tensor:
        """g [.., d] from target features [.., n·d]; features already [.., d] (the draft's own output, or the
        target's when n = 1) pass through."""
        feats = feats.to(self.fc.weight.dtype)
        if feats.shape[-1] == self.config.hidden_size:
            return feats
        parts = feats.split(self.config.hidden_size, -1)
        return self.fuse(torch.cat([norm(h) for norm, h in zip(self.fuse_norms, parts)], -1))

    def forward(self, feats: torch.Tensor, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Draft outputs f [B, T, d] for inputs g_{t-1} (target features [B, T, n·d] or the draft's own outputs
        [B, T, d]) and x_t [B, T] at positions pos [T]."""
        x = self.fc(torch.cat([self.fused(feats), self.embed(ids).to(self.fc.weight.dtype)], -1))
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, cache, i)
        return self.norm(x)

    def head_logits(self, f: torch.Tensor) -> torch.Tensor:
        """Float32 logits over the kept head rows [..., head_tokens], computed in the head's dtype.

        A bf16 draft's product runs in bf16 (0.5–0.7 ms against 0.7–1.6 ms in float32 for 1–8 rows of the
        16,384-row head on a 2-core AMX Xeon): q needs no float32, since any q keeps the output law exact (it has
        only to be the distribution the drafts were drawn from, and it is) and a bf16 tie among draft logits only
        decides which token is drafted. Rounding the logits to bf16 moved the stage-2 draft's held-out Σ min(p, q)
        by −0.0001. A float32 draft (training, CPUs without native bf16) computes in float32."""
        return head_matmul(f.to(self.head.dtype), self.head).float()

    def full_logits(self, f: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary [..., V], −inf outside the kept rows."""
        small = self.head_logits(f)
        full = small.new_full(small.shape[:-1] + (self.config.vocab_size,), float("-inf"))
        return full.scatter_(-1, self.head_ids.expand(small.shape), small)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """Write the draft's own weights, kept head rows and config (the target's parts are not stored)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().to(torch.bfloat16).contiguous() for n, p in self.named_parameters() if not n.startswith("embed.")}
        tensors["head_ids"] = self.head_ids.to(torch.int32)
        save_file(tensors, folder / WEIGHTS_NAME)
        write_text(folder / CONFIG_NAME, json.dumps({**asdict(self.config), **(extra or {})}, indent=1))

    @classmethod
    def load(cls, folder: Path, target: nn.Module, dtype: torch.dtype | None = None) -> "FeatureDraft":
        """Load a saved draft, taking the embedding and head from the target. Raises ValueError when its weights
        do not match its config or this target (load_pair checks the folder itself first: models/draft_files.py)."""
        from safetensors.torch import load_file

        cfg = json.loads((Path(folder) / CONFIG_NAME).read_text())
        c = FeatureDraftConfig(**{k: cfg[k] for k in FeatureDraftConfig.__dataclass_fields__ if k in cfg})
        tensors = load_file(str(Path(folder) / WEIGHTS_NAME))
        head_ids = tensors.pop("head_ids").long()
        model = cls(c, target.get_input_embeddings(), target.get_output_embeddings().weight, head_ids)
        check_shapes(folder, {n: t.shape for n, t in model.state_dict().items()}, "feature draft")
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if unexpected or any(not m.startswith("embed.") for m in missing):
            raise ValueError(f"{folder}: draft weights do not match its config (missing {missing}, unexpected {unexpected})")
        dev = target.get_input_embeddings().weight.device
        model.name_or_path = str(folder)
        return model.to(device=dev, dtype=dtype or target.dtype).eval()


def previous_features(features: torch.Tensor) -> torch.Tensor:
    """The draft's feature input h_{t-1} for every position t of features [..., T, d]: shifted one step to the
    right along T, zeros at t = 0 (the draft reads (h_{t-1}, x_t) to predict h_t)."""
    return F.pad(features[..., :-1, :], (0, 0, 1, 0))


def init_from_target(c: FeatureDraftConfig, target: nn.Module, head_ids: torch.Tensor) -> FeatureDraft:
    """A fresh draft whose layer starts as a copy of the target's last layer and whose fc passes h through.
    Extra layers (num_layers > 1) start as that copy too, with their output projections (o_proj, down_proj) at
    zero: each passes its input through unchanged, so a draft with fewer layers loaded on top
    (`load_state_dict`, strict=False) acts unchanged, and training grows the new layers from there."""
    embed = nn.Embedding.from_pretrained(target.get_input_embeddings().weight.detach().float().clone(), freeze=True)
    model = FeatureDraft(c, embed, target.get_output_embeddings().weight.float(), head_ids).float()
    last = target.model.layers[-1] if hasattr(target, "model") and hasattr(target.model, "layers") else None
    with torch.no_grad():
        if last is not None:
            src = dict(last.named_parameters())
            for layer in model.layers:
                for name, p in layer.named_parameters():
                    key = name if name in src else f"self_attn.{name}" if f"self_attn.{name}" in src else f"mlp.{name}"
                    if key in src and src[key].shape == p.shape:
                        p.copy_(src[key].float())
        for layer in model.extra_layers:
            layer.o_proj.weight.zero_()
            layer.down_proj.weight.zero_()
        d = c.hidden_size
        if len(c.feature_layers) > 1:  # start from the last state alone (the original design), fusion learned;
            # a draft of the original design loaded on top (`load_state_dict`, strict=False) then acts unchanged
            model.fuse.weight.zero_()
            j = c.feature_layers.index(-1) if -1 in c.feature_layers else len(c.feature_layers) - 1
            model.fuse.weight[:, j * d : (j + 1) * d] += torch.eye(d)
        model.fc.weight.zero_()
        model.fc.weight[:, :d] += torch.eye(d) / math.sqrt(2)
        model.fc.weight[:, d:] += torch.eye(d) / math.sqrt(2)
        if hasattr(target, "model") and hasattr(target.model, "norm"):
            model.norm.weight.copy_(target.model.norm.weight.float())
    return model
