"""Attention arithmetic shared by every variant: the parallel (training) call and the
single-step decode call over a cache.

The decode functions here are the PyTorch reference and the CPU path; the Triton kernels in
`kernels/` compute the same thing and are tested against these. `use_kernels` is the one switch
between the two (docs/engine.md): by default the kernels run on CUDA and PyTorch elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor

from s2s.attention.cache import AttentionCache
from s2s.attention.masks import self_attention_mask, stride_aware_visible


def sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    *,
    dropout: float = 0.0,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """F.scaled_dot_product_attention (q (B, H, L, D), k/v (B, G, T, D)), except under bfloat16
    autocast on the CPU, where it runs in float32: PyTorch's CPU flash attention computes the
    bfloat16 backward in small blocks, about 7x slower than the float32 one at our sizes
    (docs/training.md), while the products around it gain from bfloat16. The output is then
    float32; the next Linear lowers it again."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        if attn_mask is not None and attn_mask.is_floating_point():  # an additive mask
            attn_mask = attn_mask.float()
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(
                q.float(),
                k.float(),
                v.float(),
                attn_mask=attn_mask,
                dropout_p=dropout,
                scale=scale,
                enable_gqa=enable_gqa,
            )
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale, enable_gqa=enable_gqa
    )


def parallel_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    stride: int = 1,
    lengths: Tensor | None = None,
    q_pos: Tensor | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Causal (stride-aware for stride > 1) attention over a right-padded batch.

    q: (B, L, H, Dk); k: (B, T, G, Dk); v: (B, T, G, Dv) with H % G == 0 (G == H: plain MHA).
    Keys sit at positions 0..T-1, queries at q_pos (B, L) (None: L == T, query t at t; the
    prefix arrangement puts the targets' queries after the frames). lengths: (B,) valid keys or
    None. Returns (B, L, H, Dv); padded query rows hold finite values that callers zero (see
    base.zero_padding).
    """
    use_flex = backend == "flex" or (backend == "auto" and q.is_cuda)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, D)
    gqa = kh.shape[1] != qh.shape[1]
    if use_flex:
        out = _flex(qh, kh, vh, scale=scale, stride=stride, lengths=lengths, q_pos=q_pos, gqa=gqa)
    else:
        mask = self_attention_mask(k.shape[1], stride, lengths, q.device, q_pos)
        out = sdpa(qh, kh, vh, mask, dropout=dropout, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)


def attention_probs(
    q: Tensor,
    k: Tensor,
    *,
    scale: float,
    stride: int = 1,
    lengths: Tensor | None = None,
    q_pos: Tensor | None = None,
) -> Tensor:
    """The probabilities `parallel_attention` uses, computed explicitly (float32) for
    inspection: q (B, L, H, Dk), k (B, T, G, Dk) -> (B, H, L, T), 0 where the mask hides a key.
    Training never calls it; s2s.train.monitor draws these as attention maps."""
    H, G = q.shape[2], k.shape[2]
    mask = self_attention_mask(k.shape[1], stride, lengths, q.device, q_pos)
    kh = k.float().repeat_interleave(H // G, dim=2)
    scores = torch.einsum("blhd,bthd->bhlt", q.float(), kh) * scale
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


@functools.cache
def _compiled_flex():  # compiled once per process; eager flex is a slow reference
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    stride: int,
    lengths: Tensor | None,
    q_pos: Tensor | None,
    gqa: bool,
) -> Tensor:
    """flex_attention with the stride-aware causal mask as a mask_mod (block-sparse on GPU)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, L, T = q.shape[0], q.shape[2], k.shape[2]
    lens = lengths if lengths is not None else torch.full((B,), T, device=q.device)
    qpos = q_pos if q_pos is not None else torch.arange(L, device=q.device).expand(B, L)

    def mask_mod(b, h, q_idx, kv_idx):
        i = qpos[b, q_idx]
        # Padded queries keep their diagonal so no row is empty (zeroed by the caller).
        return stride_aware_visible(i, kv_idx, stride) & ((kv_idx < lens[b]) | (kv_idx == i))

    block_mask = create_block_mask(mask_mod, B, None, L, T, device=q.device)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


def attend_with_lse(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float, finite: bool = False
) -> tuple[Tensor, Tensor]:
    """One query step over gathered keys/values (reference path, softmax in at least
    float32: bfloat16 and float32 inputs in float32, float64 ones in float64).

    q: (B, Q, Dk) with Q % G == 0, query rows group-major (row i reads group i // (Q / G));
    k: (B, S, G, Dk); v: (B, S, G, Dv); valid: (B, S) bool (unused slots may hold anything,
    NaN included, unless `finite`: every slot holds a finite value, as a shared part's do,
    and the unused values need no zeroing). Returns out (B, Q, Dv) and its log-sum-exp
    (B, Q), both in that precision; a row with no valid slot gives out 0 and lse -inf (it
    then weighs nothing in a merge).
    """
    B, Q, Dk = q.shape
    S, G = k.shape[1], k.shape[2]
    acc = torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    # Every slot is valid in most steps (all rows of a search advance together): the masks
    # then change nothing, and a host read of that (free on the CPU; a compiled or exported
    # step keeps the masks) skips them.
    full = not traced() and bool(valid.all())
    if not full and not finite:  # 0 * NaN would poison the sum
        v = v.masked_fill(~valid[:, :, None, None], 0.0)
    if Q == G and G > 1:
        # One query per key head (MHA's own part). The scores stay slot-major, (B, S, H) like
        # the slots, and the softmax runs over dim 1: both products read each slot's (H, D)
        # block along D, and a compiled step vectorises its sum over the slots along D (a
        # (B, H, S) layout made it vectorise along the slots, one scalar load per gathered
        # value, BENCHMARKS.md §29, §36).
        scores = (k * q[:, None]).sum(-1) * scale  # (B, S, H)
        p, denom, m = _softmax_terms(scores, None if full else ~valid[:, :, None], dim=1)
        out = (p[..., None] * v).sum(1) / denom.clamp_min(1e-30)[..., None]
        return out, m[:, 0] + denom.log()
    # The products in the layout the operands come in: a (B, S, G, D) gather is never
    # transposed into a copy (einsum's way cost more than the products at decode sizes).
    if G == 1:  # latent variants: every query against one key matrix per row
        scores = torch.bmm(q, k[:, :, 0].transpose(1, 2)).view(B, 1, Q, S)
    else:  # per key head, its queries against its (S, D) slots: a view of a head-major
        # shared part (AttentionCache._shared_copy), so the batched product transposes nothing
        scores = torch.matmul(q.view(B, G, Q // G, Dk), k.transpose(1, 2).transpose(2, 3))
    invalid = None if full else ~valid[:, None, None, :]
    p, denom, m = _softmax_terms(scores * scale, invalid, dim=-1)
    if G == 1:
        out = torch.bmm(p.view(B, Q, S), v[:, :, 0]).view(B, 1, Q, -1)
    else:  # per key head: (B, G, Q/G, S) x (B, G, S, D), in place over a head-major part
        out = torch.matmul(p, v.transpose(1, 2))
    out = out / denom.clamp_min(1e-30)[..., None]
    lse = m[..., 0] + denom.log()
    return out.reshape(B, Q, -1), lse.reshape(B, Q)


def _softmax_terms(
    scores: Tensor, invalid: Tensor | None, dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The unnormalised softmax of `scores` over `dim`: exp(scores - max), its sum and the max
    (keepdim). The slots `invalid` marks (broadcast against scores; None: every slot valid)
    weigh nothing, masked in place (`scores` is the caller's own tensor); a row with none
    valid keeps a max of 0, so its weights are 0, not NaN."""
    if invalid is not None:
        scores = scores.masked_fill_(invalid, float("-inf"))
    m = scores.amax(dim=dim, keepdim=True)
    if invalid is not None:
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = (scores - m).exp()
    return p, p.sum(dim=dim), m


def cached_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    owner: Tensor | None,
    num_slots: Tensor,
    scale: float,
    values_in_keys: bool = False,
) -> tuple[Tensor, Tensor]:
    """Decode attention straight over a cache's own buffers (AttentionCache layout).

    q: (N, H, Dk); k: (R, S_cap, G, Dk) and v: (R, S_cap, G, Dv) buffers (views allowed, e.g.
    the first columns of a latent buffer); owner: (N, S_cap) row of each sequence's slot, or
    None when row n holds sequence n; num_slots: (N,) slots in use (>= 1); values_in_keys: v
    is k's first Dv columns (the latent layout: gathered once). Returns the output
    (N, H, Dv) and its (N, H) float32 log-sum-exp (for a cascade merge).
    With kernels active (use_kernels) this runs the Triton kernel (kernels.decode_attention),
    which reads through `owner` without gathering; otherwise the same math in PyTorch.
    """
    if kernels_active(q):
        from kernels.decode_attention import decode_attention_triton

        return decode_attention_triton(q, k, v, owner, num_slots, scale)
    S = slots_in_use(num_slots, k.shape[1])
    slots = torch.arange(S, device=q.device)
    if owner is None:
        kk, vv = k[:, :S], v[:, :S]
    else:
        kk, vv = gather_slots(k, v, owner[:, :S], values_in_keys)
    out, lse = attend_with_lse(q, kk, vv, slots[None, :] < num_slots[:, None], scale)
    return out.to(q.dtype), lse


def gather_slots(
    k: Tensor, v: Tensor, rows: Tensor, values_in_keys: bool = False
) -> tuple[Tensor, Tensor]:
    """Slot j of sequence n from row rows[n, j]: k (R, Ck, G, Dk), v (R, Cv, G, Dv), rows (N, S)
    -> (N, S, G, Dk), (N, S, G, Dv). One index_select of whole slots over the (row, slot)
    axis: a gather by two index tensors copies element by element, 3x slower on the CPU.
    values_in_keys: v is k's first Dv columns (latent_views), sliced from k's gather."""
    N, S = rows.shape
    slots = torch.arange(S, device=rows.device)

    def gather(x: Tensor) -> Tensor:  # x's own columns: k_of may give fewer than the buffer
        flat = (rows * x.shape[1] + slots).view(-1)
        return x.flatten(0, 1).index_select(0, flat).view(N, S, *x.shape[2:])

    kk = gather(k)
    return kk, kk[..., : v.shape[-1]] if values_in_keys else gather(v)


def slots_in_use(num_slots: Tensor, columns: int) -> int:
    """The columns of a (R, columns, ...) cache buffer a decode step reads: the most slots any
    row uses (num_slots (N,)). Traced for export (s2s.export) or compiled (decode.compile,
    s2s.decode.compiled), every column, the slots past num_slots masked: reading the count
    would make the graph's shapes data-dependent (and, compiled, wait on the device), where
    one graph over the whole allocation serves every step."""
    if traced():
        return columns
    return int(num_slots.max())


def traced() -> bool:
    """Whether the code runs under torch.compile or export: no reading tensors back on the
    host to choose shapes or branches there."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling()


KERNEL_MODES = ("auto", "off", "on")
_kernel_mode: ContextVar[str] = ContextVar("s2s_kernel_mode", default="auto")


@contextlib.contextmanager
def use_kernels(mode: str | bool) -> Iterator[None]:
    """Within the block, decode steps use the Triton kernels: "auto" (or True) on CUDA
    tensors only, "off" (or False) never (the PyTorch reference, for comparisons), "on" on any
    device (on CPU only under TRITON_INTERPRET=1: the interpreter tests)."""
    mode = {True: "auto", False: "off"}.get(mode, mode)  # type: ignore[call-overload]
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode {mode!r} not in {KERNEL_MODES}")
    token = _kernel_mode.set(mode)
    try:
        yield
    finally:
        _kernel_mode.reset(token)


def kernels_active(t: Tensor) -> bool:
    """Whether a decode op on tensor t runs its Triton kernel (see use_kernels). Never inside
    torch.compile (decode.compile): the compiler generates its own kernels from the PyTorch
    path."""
    if torch.compiler.is_compiling():
        return False
    mode = _kernel_mode.get()
    return mode == "on" or (mode == "auto" and t.is_cuda and _triton_available())


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:  # pragma: no cover - triton ships with torch on Linux
        return False
    return True


def cascade_attention(
    q: Tensor,
    cache: AttentionCache,
    k_of: Callable[[dict[str, Tensor]], Tensor],
    v_of: Callable[[dict[str, Tensor]], Tensor],
    scale: float,
) -> Tensor:
    """One decode step over a cache's two parts (docs/engine.md), merged by log-sum-exp.

    q: (N, H, Dk) for N = U * K rows (K = cache.group hypotheses per utterance). k_of / v_of
    pick the key (R, S, G, Dk) and value (R, S, G, Dv) views from a part's buffers (a v_of
    marked `values_in_keys` gives the keys' first columns, latent_views). The shared
    part is attended by all K*H queries of an utterance at once, one dense product against
    its one copy; the own part per row through the ancestry table. Returns (N, H, Dv).
    With kernels active, kernels.cascade_attention does both parts and the merge.
    """
    has_shared = len(cache.shared) > 0 and next(iter(cache.shared.values())).shape[1] > 0
    if kernels_active(q):
        from kernels.cascade_attention import cascade_attention_triton
        from kernels.decode_attention import CachePart

        own = CachePart(k_of(cache.buffers), v_of(cache.buffers), cache.owner, cache.own_slots())
        shared = None
        if has_shared:
            shared = CachePart(k_of(cache.shared), v_of(cache.shared), None, cache.shared_slots)
        return cascade_attention_triton(q, own, shared, scale)
    out_own, lse_own = cached_attention(
        q,
        k_of(cache.buffers),
        v_of(cache.buffers),
        cache.owner,
        cache.own_slots(),
        scale,
        getattr(v_of, "values_in_keys", False),
    )
    if not has_shared:
        return out_own
    ks, vs = k_of(cache.shared), v_of(cache.shared)  # (U, S, G, D)
    N, H, Dk = q.shape
    U, S, G = ks.shape[:3]
    K = N // U
    # (U*K, H) queries -> (U, G * K * H/G): group-major rows, as attend_with_lse expects
    qs = q.view(U, K, G, H // G, Dk).transpose(1, 2).reshape(U, K * H, Dk)
    valid = torch.arange(S, device=q.device)[None, :] < cache.shared_slots[:, None]
    # finite: the shared slots are prefilled values and zero padding (cache.fill_prefix,
    # pad_slots), never an uninitialised buffer
    out_sh, lse_sh = attend_with_lse(qs, ks, vs, valid, scale, finite=True)
    Dv = out_sh.shape[-1]
    out_sh = out_sh.view(U, G, K, H // G, Dv).transpose(1, 2).reshape(N, H, Dv)
    lse_sh = lse_sh.view(U, G, K, H // G).transpose(1, 2).reshape(N, H)
    acc = lse_sh.dtype  # attend_with_lse's: at least float32
    lse = torch.logaddexp(lse_sh, lse_own.to(acc))
    w_sh, w_own = (lse_sh - lse).exp()[..., None], (lse_own.to(acc) - lse).exp()[..., None]
    return (out_sh * w_sh + out_own.to(acc) * w_own).to(q.dtype)


def latent_views(value_dim: int):
    """k_of / v_of for the MLA/MTLA latent buffer "kv" (R, S, r + d_r): the key is the whole
    slot, the value its first value_dim (= r) columns, both views (G = 1), nothing expanded.
    v_of says so (`values_in_keys`), so the CPU path gathers the slots once for both."""

    def v_of(b: dict[str, Tensor]) -> Tensor:
        return b["kv"][:, :, None, :value_dim]

    v_of.values_in_keys = True  # type: ignore[attr-defined]
    return (lambda b: b["kv"][:, :, None]), v_of


def merged_slot(
    c: Tensor, k_rope: Tensor, a: Tensor, b: Tensor, cache: AttentionCache, slot: Tensor
) -> Tensor:
    """MTLA's new cache slot for one decode step (kernels/mtla_update.py has the formula).

    c: (N, r) normalised latents, k_rope: (N, d_r) rotated RoPE keys, a / b: (N, r/4) the
    hyper-network's A PE(t // s) and B c; slot: (N,) global slot of each token's chunk in the
    cache's buffer "kv", whose first r columns hold the chunk's partial sum so far.
    Returns [partial + w c ; k_rope] (N, r + d_r), w = sigmoid(<a, b>), partial = 0 when the
    token opens its chunk."""
    first = cache.length % cache.stride == 0
    if kernels_active(c):
        from kernels.mtla_update import mtla_slot_triton

        j = cache.own_index(slot)
        return mtla_slot_triton(c, k_rope, a, b, cache.buffers["kv"], cache.owner, j, first)
    wc = torch.sigmoid((a * b).sum(-1))[:, None] * c
    # `where`, not a product: an unwritten slot may hold anything (NaN included).
    previous = cache.read("kv", slot)[:, : c.shape[1]]
    return torch.cat((torch.where(first[:, None], wc, previous + wc), k_rope), -1)
