"""The MTLA authors' attention (PyPI `mtla` 0.3.2, mtla/MTLA.py) behind our decoder's layer
interface, so the decode benchmark runs their cache in the same decoder and beam search as
ours: their prompt handling (the frames and the first target compressed in one call, per
hypothesis), their slot growth (torch.cat per new slot) and their reordering
(`reorder_incremental_state`: index_select of every cached tensor, every step).

Benchmark-only: their module is loaded from the installed wheel's file (the package's
__init__ needs `transformers`); `load_authors_mtla` returns None when `mtla` is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from s2s.attention.probe import probing, report


def load_authors_mtla() -> ModuleType | None:
    """mtla/MTLA.py as a module, or None when the `mtla` package is not installed."""
    spec = importlib.util.find_spec("mtla")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "MTLA.py"
    mod_spec = importlib.util.spec_from_file_location("_authors_mtla", path)
    if mod_spec is None or mod_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(mod_spec)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a flash_attn warning
        mod_spec.loader.exec_module(module)
    return module


class AuthorsCache:
    """Their incremental state for N rows, plus the frames until the first step needs them."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.state: dict = {}
        self.frames: Tensor | None = None
        self.n_frames = 0
        self.steps = 0
        self.peak_allocated = 0

    def _tensors(self) -> list[Tensor]:
        buf = self.module._get_input_buffer(self.state)
        kept = [t for k, t in buf.items() if k != "infer_steps" and t is not None]
        return kept + ([self.frames] if self.frames is not None and not kept else [])

    def allocated_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())

    used_bytes = allocated_bytes

    def _track(self) -> None:
        self.peak_allocated = max(self.peak_allocated, self.allocated_bytes())

    def expand(self, beam: int, own_slots: int | None = None) -> None:
        """fairseq repeats the encoder output per hypothesis before decoding starts."""
        assert self.frames is not None
        self.frames = self.frames.repeat_interleave(beam, dim=0)
        self._track()

    def reorder(self, index: Tensor) -> None:
        self.module.reorder_incremental_state(self.state, index)
        self._track()


class AuthorsAttention(nn.Module):
    """Their MultiheadTemporalLatentAttention in our attention's decoding role (prefill, step).
    Every row must have the same number of frames: their incremental path takes one decode
    position for the whole batch."""

    def __init__(
        self,
        authors: ModuleType,
        d_model: int,
        n_heads: int,
        head_dim: int,
        latent_dim: int,
        rope_dim: int,
        stride: int,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.attn = authors.MultiheadTemporalLatentAttention(
            embed_dim=d_model,
            num_heads=n_heads,
            kv_lora_rank=latent_dim,
            qk_nope_head_dim=head_dim,
            qk_rope_head_dim=rope_dim,
            v_head_dim=head_dim,
            down_rate=stride,
        )
        self.latent_dim, self.rope_dim = latent_dim, rope_dim

    def cache_elements_per_token(self) -> float:
        return (self.latent_dim + self.rope_dim) / self.stride

    def new_cache(self, batch_size: int, **_: object) -> AuthorsCache:
        return AuthorsCache(self.attn)

    def prefill(self, frames: Tensor, lengths: Tensor | None, cache: AuthorsCache) -> None:
        if lengths is not None and bool((lengths != frames.shape[1]).any()):
            raise ValueError("the authors' decoding needs equal frame counts within a batch")
        cache.frames, cache.n_frames = frames, frames.shape[1]

    def step(self, x: Tensor, cache: AuthorsCache) -> Tensor:
        """x: (N, 1, d) -> (N, 1, d), the target at position P + t."""
        N, P = x.shape[0], cache.n_frames
        if cache.steps == 0:  # frames and first target in one call: their prompt compression
            key = torch.cat((cache.frames, x), 1)
            pos = torch.arange(P + 1, device=x.device, dtype=torch.float).expand(N, -1)
            cache.frames = None
        else:
            key = x
            pos = torch.full((N, 1), float(P + cache.steps), device=x.device)
        out = self.attn(x, key, key, position=pos, incremental_state=cache.state)
        cache.steps += 1
        cache._track()
        return out


class AuthorsPrefixTraining(AuthorsAttention):
    """Their module in our decoder's training role, as their fairseq decoder calls it in the
    prefix arrangement: queries = targets, keys/values = [padded frames ; padded targets],
    frames visible to every target, positions 0..P+L-1, padding hidden by key_padding_mask
    (so, unlike ours, a chunk may straddle a sample's last frame and the padding after it).

    Trains side by side with ours (BENCHMARKS.md §6): under a probe (s2s.attention.probe) it
    reports "merge_weight" as MTLA does, (B, P + L) laid out as ours ([frames_b ; targets_b ;
    padding] per row), so an inspection (the training monitor) reads their merge weights the
    same way. Their attention probabilities are not reported (their module does not expose
    them)."""

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        cache: object = None,
        *,
        prefix: Tensor | None = None,
        prefix_lengths: Tensor | None = None,
    ) -> Tensor:
        """x: (B, L, d) targets with lengths (B,); prefix: (B, P, d) frames with prefix_lengths
        (B,). Returns (B, L, d), zero at padded targets."""
        if cache is not None or prefix is None or prefix_lengths is None or lengths is None:
            raise ValueError("the authors' module trains here in the prefix arrangement only")
        B, L, _ = x.shape
        P = prefix.shape[1]
        dev = x.device
        causal = torch.full((L, L), float("-inf"), device=dev).triu(1)
        mask = torch.cat((torch.zeros(L, P, device=dev), causal), 1)
        j = torch.arange(P + L, device=dev)[None, :]
        padded = torch.where(j < P, j >= prefix_lengths[:, None], j - P >= lengths[:, None])
        pos = j.expand(B, -1).float()
        y = torch.cat((prefix, x), 1)
        hook = None
        asked = probing()
        if asked:  # their hyper-network's output is read where their module computes it
            seen: dict[str, Tensor] = {}
            hook = self.attn.hypernet_down.register_forward_hook(
                lambda m, i, w: seen.update(w=w.diagonal(dim1=1, dim2=2))  # (B, T): w_j
            )
        try:
            out = self.attn(x, y, y, key_padding_mask=padded, self_attn_mask=mask, position=pos)
        finally:
            if hook is not None:
                hook.remove()
        if asked:
            # Their layout [P frames ; L targets] -> ours [P_b frames ; L_b targets ; pad].
            # A padded frame goes to the last column: past the row's length (its padding) in
            # every row that has padded frames; the targets are written after it.
            frames = torch.where(padded[:, :P], P + L - 1, j[:, :P])
            tgt = prefix_lengths[:, None] + torch.arange(L, device=dev)[None, :]
            w = torch.zeros(B, P + L, device=dev, dtype=seen["w"].dtype)
            w.scatter_(1, frames, seen["w"][:, :P])
            w.scatter_(1, tgt, seen["w"][:, P:])
            report(self, merge_weight=w)
        keep = (torch.arange(L, device=dev)[None, :] < lengths[:, None]).to(out.dtype)
        return out * keep[..., None]


def use_authors_modules(model: nn.Module, authors: ModuleType) -> None:
    """Replace every decoder layer's MTLA of `model` (a prefix-arrangement Seq2SeqModel) by
    their module carrying the same weights (ours -> theirs: our biases dropped, as their
    projections have none; A's input columns permuted back to their interleaved sin/cos)."""
    from s2s.attention.mtla import TemporalLatentAttention

    for layer in model.decoder.layers:
        ours = layer.self_attn
        if not isinstance(ours, TemporalLatentAttention) or ours.stride < 2:
            raise ValueError("use_authors_modules needs an MTLA decoder with stride >= 2")
        cfg = ours.cfg
        theirs = AuthorsPrefixTraining(
            authors,
            cfg.d_model,
            ours.n_heads,
            ours.head_dim,
            ours.latent_dim,
            ours.rope_dim,
            ours.stride,
        )
        theirs.attn.dropout = cfg.dropout
        H, D, R = ours.n_heads, ours.head_dim, ours.latent_dim
        t = theirs.attn
        with torch.no_grad():
            t.wq.weight.copy_(ours.q_proj.weight)
            t.wkv_a.weight.copy_(ours.dkv_proj.weight)
            t.kv_norm.load_state_dict(ours.kv_norm.state_dict())
            uk, uv = ours.uk_proj.weight.view(H, D, R), ours.uv_proj.weight.view(H, D, R)
            t.wkv_b.weight.copy_(torch.cat((uk, uv), 1).reshape(2 * H * D, R))
            t.wo.weight.copy_(ours.out_proj.weight)
            # Ours = theirs[:, order] (tests/test_authors_mtla.py), so theirs[:, order] = ours.
            order = torch.cat((torch.arange(0, R, 2), torch.arange(1, R, 2)))
            t.hypernet_down.fc_c.weight[:, order] = ours.hyper_pe.weight
            t.hypernet_down.fc_c.bias.copy_(ours.hyper_pe.bias)
            t.hypernet_down.fc_p.load_state_dict(ours.hyper_latent.state_dict())
        layer.self_attn = theirs.to(ours.q_proj.weight.device)
