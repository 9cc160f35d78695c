"""The per-layer decoding cache: named slot buffers plus a token count per sequence
(docs/engine.md).

A slot holds what one layer keeps for one cache position: (k, v) for MHA-style variants, the
latent [c ; k_rope] for MLA, a temporally merged latent for MTLA (stride s tokens per slot).

Two parts:
- **shared**, once per utterance: slots every hypothesis of an utterance has in common (the
  prefix/prompt frames' completed slots), `(U, S_shared, *slot)` for U utterances, filled by
  `fill_prefix` and never copied per beam. An MTLA chunk the frames left incomplete
  (P mod s != 0) is not shared: the first target merges into it, so it goes to the own part.
- **own**, one row per hypothesis: `buffers[name]` of `(N, S_own, *slot)`, N = U * group. Beam
  search allocates it once for the longest output (`expand(beam, own_slots)`); elsewhere it
  grows by doubling. Buffers come from `torch.empty` (or a poison value in tests), so readers
  mask slots not in use.

Global slot g of row n is shared slot g while g < shared_slots[u] (u = n // group), else own
slot g - shared_slots[u]. Beam search reorders rows every step. With `ancestry=True` the own
part is append-only: row h writes only its own new slot and `owner[h, j]` names the row whose
buffer holds own slot j of sequence h, so reordering moves integers, not vectors. Every row of
a group writes the same slot index at the same step, and a step gathers what it reads before
it writes, so a slot another row still points at is never overwritten under it. Without
ancestry, reordering copies the own part (what fairseq does); `share_prefix=False` also keeps
the frames in every row's own part: the naive engine the benchmarks compare against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class AttentionCache:
    """Decoding state of one self-attention layer for N sequences (rows).

    buffers[name]: own part (N, S_own, *slot_shape[name]); shared[name]: (U, S_shared, ...)
    or absent; length: (N,) long tokens seen per sequence (frames included), so the slots in
    use are the first ceil(length / stride) global slots of each row.
    """

    def __init__(
        self,
        batch_size: int,
        slot_shapes: dict[str, tuple[int, ...]],
        *,
        stride: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        capacity: int = 16,
        fill: float | None = None,
        ancestry: bool = False,
        share_prefix: bool = True,
        growable: bool = True,
        head_major_shared: bool = True,
    ) -> None:
        self.stride = stride
        # The shared part stored head by head for the PyTorch step (`_shared_copy`); slot by
        # slot for a step that takes it as plain arrays (the ONNX runtime: no copy a step).
        self.head_major_shared = head_major_shared
        # False once the own part is allocated for a whole search (`expand(beam, own_slots)`,
        # or `capacity` given so): a step then never reads the device to size a buffer.
        self.growable = growable
        self.fill = fill
        self.share_prefix = share_prefix
        self.slot_shapes = dict(slot_shapes)
        self.length = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.buffers = {
            name: self._alloc((batch_size, capacity, *shape), device, dtype)
            for name, shape in slot_shapes.items()
        }
        self.shared: dict[str, Tensor] = {}
        self.shared_slots = torch.zeros(batch_size, dtype=torch.long, device=device)  # (U,)
        self.group = 1
        # owner: (N, S_own) long, or None when every row owns its slots (no reordering)
        self.owner: Tensor | None = None
        if ancestry:
            self.owner = self._rows()[:, None].expand(-1, capacity).contiguous()
        self.peak_allocated = self.allocated_bytes()

    # --- geometry -------------------------------------------------------------------------
    def _rows(self) -> Tensor:
        return torch.arange(self.batch_size, device=self.length.device)

    def _alloc(self, shape: tuple[int, ...], device, dtype) -> Tensor:
        if self.fill is None:
            return torch.empty(shape, device=device, dtype=dtype)
        return torch.full(shape, self.fill, device=device, dtype=dtype)

    @property
    def batch_size(self) -> int:
        """N: rows (hypotheses)."""
        return self.length.shape[0]

    @property
    def capacity(self) -> int:
        """Own slots allocated per row."""
        return next(iter(self.buffers.values())).shape[1]

    def base(self) -> Tensor:
        """(N,) global index of each row's own slot 0 (= its utterance's shared slots)."""
        return self.shared_slots.repeat_interleave(self.group)

    def num_slots(self) -> Tensor:
        """(N,) global slots in use: ceil(length / stride)."""
        return (self.length + self.stride - 1) // self.stride

    def own_slots(self) -> Tensor:
        """(N,) own slots in use."""
        return self.num_slots() - self.base()

    def own_in_use(self) -> int:
        """The most own slots any row uses (a host read): the columns a copy must keep."""
        return int(self.own_slots().max()) if self.batch_size else 0

    # --- memory ---------------------------------------------------------------------------
    def allocated_bytes(self) -> int:
        """Bytes the cache holds now: own and shared buffers (the owner table too)."""
        tensors = [*self.buffers.values(), *self.shared.values()]
        if self.owner is not None:
            tensors.append(self.owner)
        return sum(t.numel() * t.element_size() for t in tensors)

    def used_bytes(self) -> int:
        """Bytes of the slots in use: shared slots once per utterance, own slots per row."""
        per_slot = sum(
            math.prod(s) * b.element_size()
            for s, b in zip(self.slot_shapes.values(), self.buffers.values())
        )
        return per_slot * int(self.shared_slots.sum() + self.own_slots().sum())

    def _track(self) -> None:
        self.peak_allocated = max(self.peak_allocated, self.allocated_bytes())

    def _shared_copy(self, x: Tensor) -> Tensor:
        """A copy of shared slots x (U, S, G, ...) stored head by head, (U, G, S, ...) in memory,
        as the same (U, S, G, ...) view: a step attends each head's shared slots with all of its
        utterance's queries at once, and so stored, a head's (S, D) keys and values are one
        matrix the batched product reads in place, where slot by slot they were transposed into
        a copy in every layer at every step. Slot by slot where `head_major_shared` is False
        or the slots have one head (the latent variants) or no head axis."""
        if self.head_major_shared and x.dim() >= 4 and x.shape[2] > 1:
            out = torch.empty_like(x.transpose(1, 2), memory_format=torch.contiguous_format)
            return out.transpose(1, 2).copy_(x)
        return torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x)

    # --- writing ----------------------------------------------------------------------------
    def reserve(self, slots: int) -> None:
        """Own buffers of at least `slots` slots per row (growth doubles: outside a search,
        where nobody knows the final length)."""
        cap = self.capacity
        if slots > cap:
            self._grow_own(max(slots, 2 * cap))

    def _grow_own(self, new_cap: int) -> None:
        """Own buffers (and owner table) of new_cap > capacity slots, the slots in use copied."""
        cap = self.capacity
        used = min(self.own_in_use(), cap)
        for name, buf in self.buffers.items():
            grown = self._alloc((buf.shape[0], new_cap, *buf.shape[2:]), buf.device, buf.dtype)
            grown[:, :used] = buf[:, :used]
            self.buffers[name] = grown
        if self.owner is not None:
            tail = self._rows()[:, None].expand(-1, new_cap - cap)
            self.owner = torch.cat((self.owner, tail), dim=1)
        self._track()

    def pad_slots(self, own: int, shared: int) -> None:
        """Static shapes for a compiled step (s2s.decode.compiled): own buffers of at least
        `own` slots per row and, where the cache has a shared part, shared buffers of at least
        `shared` slots (zeros). The slots added are past every row's count, so the masks hide
        them; they are allocated memory and count as such."""
        if own > self.capacity:
            self._grow_own(own)
        for name, buf in self.shared.items():
            if buf.shape[1] < shared:
                tail = buf.new_zeros(buf.shape[0], shared - buf.shape[1], *buf.shape[2:])
                self.shared[name] = self._shared_copy(torch.cat((buf, tail), dim=1))
        self._track()

    def own_index(self, slot: Tensor) -> Tensor:
        """(N,) own-part index of global slot slot[n] of every row n (slot: (N,) long). A
        growable cache grows to hold it; these checks read the device, so a search's cache,
        allocated once, skips them (a GPU decode step never waits on the host)."""
        j = slot - self.base()
        if self.growable:
            if bool((j < 0).any()):
                raise ValueError("shared slots are read-only: a step only touches its own slots")
            self.reserve(int(j.max()) + 1)
        return j

    def read(self, name: str, slot: Tensor) -> Tensor:
        """Own slot at global index slot[n] of every row n. slot: (N,) long ->
        (N, *slot_shape)."""
        j = self.own_index(slot)
        rows = self._rows()
        if self.owner is not None:
            rows = self.owner[rows, j]
        return self.buffers[name][rows, j]

    def write(self, name: str, slot: Tensor, value: Tensor) -> None:
        """Store value[n] (N, *slot_shape) into global slot slot[n] (own part) of row n."""
        j = self.own_index(slot)
        rows = self._rows()
        self.buffers[name][rows, j] = value.to(self.buffers[name].dtype)
        if self.owner is not None:
            self.owner[rows, j] = rows

    def fill_prefix(self, values: dict[str, Tensor], lengths: Tensor) -> None:
        """Prefill an empty cache with the slots of a prefix: values[name] (N, S, *slot_shape)
        are global slots 0..S-1, `length` becomes `lengths` (N,). Completed slots go to the
        shared part (one row per sequence; `expand` later shares them between beams), an
        incomplete last MTLA chunk to own slot 0. Slots past ceil(length / s) are ignored."""
        if self.batch_size and int(self.length.max()) > 0:
            raise ValueError("fill_prefix needs an empty cache")
        if self.group != 1:
            raise ValueError("fill_prefix comes before expand")
        s = self.stride
        lengths = lengths.to(self.length)
        S = next(iter(values.values())).shape[1]
        if not self.share_prefix:
            self.reserve(max(S, 1))
            for name, val in values.items():
                self.buffers[name][:, :S] = val.to(self.buffers[name].dtype)
            self.length = lengths
            self._track()
            return
        complete = lengths // s
        n_sh = min(int(complete.max()) if self.batch_size else 0, S)
        partial = (lengths % s != 0) & (complete < S)
        rows = self._rows()
        for name, val in values.items():
            buf = self.buffers[name]
            self.shared[name] = self._shared_copy(val[:, :n_sh].to(buf.dtype))
            if bool(partial.any()):
                idx = complete.clamp(max=S - 1)
                buf[rows[partial], 0] = val[rows[partial], idx[partial]].to(buf.dtype)
        self.shared_slots = complete
        self.length = lengths
        self._track()

    def advance(self, n: int = 1) -> None:
        self.length = self.length + n

    def reorder(self, index: Tensor) -> None:
        """Row i becomes the old row index[i], within its utterance's group. With ancestry only
        the owner table moves, in place (its tensor stays the one a compiled step reads);
        without, the own buffers are copied (O(S) per step)."""
        self.length = self.length.index_select(0, index)
        if self.owner is not None:
            self.owner.copy_(self.owner.index_select(0, index))
        else:
            self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self._track()

    def keep_rows(self, rows: Tensor) -> None:
        """Only rows `rows` (N',) stay, in that order: whole groups, and with ancestry whole
        blocks of the rows that share slots (beam search drops the utterances it has finished,
        every row of one). The own part keeps its capacity, the shared part its utterances'
        rows; the slots in use are copied, and owner entries name the rows' new indices."""
        utts = rows[:: self.group] // self.group
        used = self.own_in_use()
        new_n = rows.shape[0]
        for name, buf in self.buffers.items():
            kept = self._alloc((new_n, buf.shape[1], *buf.shape[2:]), buf.device, buf.dtype)
            kept[:, :used] = buf[:, :used].index_select(0, rows)
            self.buffers[name] = kept
        if self.owner is not None:
            new_index = torch.full_like(self.length, -1)
            new_index[rows] = torch.arange(new_n, device=rows.device)
            self.owner = new_index[self.owner.index_select(0, rows)]
        self.shared = {
            k: self._shared_copy(v.index_select(0, utts)) for k, v in self.shared.items()
        }
        self.shared_slots = self.shared_slots.index_select(0, utts)
        self.length = self.length.index_select(0, rows)

    def expand(self, beam: int, own_slots: int | None = None) -> None:
        """U sequences -> U * beam rows, each repeated `beam` times consecutively (the start of
        beam search). The shared part stays one per utterance; the own part (at most MTLA's
        incomplete chunk here, or the whole prefix without share_prefix) is copied per row.
        own_slots: allocate exactly this many own slots per row now, so nothing grows during
        the search."""
        if self.group != 1:
            raise ValueError("expand once")
        U, cap = self.batch_size, self.capacity
        used = self.own_in_use()
        new_cap = max(own_slots or cap, used, 1)
        index = self._rows().repeat_interleave(beam)
        for name, buf in self.buffers.items():
            grown = self._alloc((U * beam, new_cap, *buf.shape[2:]), buf.device, buf.dtype)
            grown[:, :used] = buf[index, :used]
            self.buffers[name] = grown
        self.length = self.length.index_select(0, index)
        self.group = beam
        self.growable = own_slots is None
        if self.owner is not None:
            self.owner = (
                torch.arange(U * beam, device=index.device)[:, None]
                .expand(-1, new_cap)
                .contiguous()
            )
        self._track()

    def elements_per_token(self) -> float:
        """Cached elements per token: slot elements summed over buffers, over stride."""
        return sum(math.prod(s) for s in self.slot_shapes.values()) / self.stride
