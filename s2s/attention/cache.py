"""The per-layer decoding cache: named slot buffers plus a token count per sequence.

A slot holds what one layer keeps for one cache position: (k, v) for MHA-style variants, the
latent [c ; k_rope] for MLA, a temporally merged latent for MTLA (stride s tokens per slot).
Buffers grow by doubling and are allocated with `torch.empty` (or a poison value in tests), so
readers must mask unused slots; `valid_mask` says which slots are in use.

Beam search reorders sequences every step. Copying every buffer for that costs O(T) per step.
With `ancestry=True` the cache is append-only instead: row h writes only its own new slot, and
`owner[h, j]` names the row whose buffer holds slot j of sequence h, so reordering moves
integers, not vectors, and readers gather through `owner`. Every sequence of a beam group
writes the same slot index at the same step, and a step gathers what it reads before it writes,
so a slot another sequence still points at is never overwritten under it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class AttentionCache:
    """Decoding state of one self-attention layer for a batch of sequences.

    buffers[name]: (B, S_capacity, *slot_shape[name]); length: (B,) long tokens seen per
    sequence; the slots in use are the first ceil(length / stride) of each row.
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
    ) -> None:
        self.stride = stride
        self.fill = fill
        self.slot_shapes = dict(slot_shapes)
        self.length = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.buffers = {
            name: self._alloc((batch_size, capacity, *shape), device, dtype)
            for name, shape in slot_shapes.items()
        }
        # owner: (B, S_capacity) long, or None when every row owns its slots (no reordering)
        self.owner: Tensor | None = None
        if ancestry:
            self.owner = self._rows()[:, None].expand(-1, capacity).contiguous()

    def _rows(self) -> Tensor:
        return torch.arange(self.batch_size, device=self.length.device)

    def _alloc(self, shape: tuple[int, ...], device, dtype) -> Tensor:
        if self.fill is None:
            return torch.empty(shape, device=device, dtype=dtype)
        return torch.full(shape, self.fill, device=device, dtype=dtype)

    @property
    def batch_size(self) -> int:
        return self.length.shape[0]

    @property
    def capacity(self) -> int:
        return next(iter(self.buffers.values())).shape[1]

    def num_slots(self) -> Tensor:
        """(B,) slots in use: ceil(length / stride)."""
        return (self.length + self.stride - 1) // self.stride

    def max_slots(self) -> int:
        return int(self.num_slots().max()) if self.batch_size else 0

    def valid_mask(self, num: int | None = None) -> Tensor:
        """(B, num) bool: True for slots in use (num defaults to max_slots())."""
        num = self.max_slots() if num is None else num
        return torch.arange(num, device=self.length.device)[None, :] < self.num_slots()[:, None]

    def view(self, name: str, num: int | None = None) -> Tensor:
        """(B, num, *slot_shape): the first num slots of every sequence (a view without
        ancestry; gathered through `owner` with it)."""
        num = self.max_slots() if num is None else num
        if self.owner is None:
            return self.buffers[name][:, :num]
        return self.buffers[name][self.owner[:, :num], torch.arange(num, device=self.owner.device)]

    def reserve(self, slots: int) -> None:
        """Grow every buffer (by doubling) to hold at least `slots` slots per sequence."""
        cap = self.capacity
        if slots <= cap:
            return
        new_cap = max(slots, 2 * cap)
        for name, buf in self.buffers.items():
            grown = self._alloc((buf.shape[0], new_cap, *buf.shape[2:]), buf.device, buf.dtype)
            grown[:, :cap] = buf
            self.buffers[name] = grown
        if self.owner is not None:
            tail = self._rows()[:, None].expand(-1, new_cap - cap)
            self.owner = torch.cat((self.owner, tail), dim=1)

    def read(self, name: str, slot: Tensor) -> Tensor:
        """Slot `slot[b]` of every row b. slot: (B,) long. Returns (B, *slot_shape)."""
        self.reserve(int(slot.max()) + 1)
        rows = self._rows()
        if self.owner is not None:
            rows = self.owner[rows, slot]
        return self.buffers[name][rows, slot]

    def write(self, name: str, slot: Tensor, value: Tensor) -> None:
        """Store value[b] (B, *slot_shape) into slot slot[b] of row b."""
        self.reserve(int(slot.max()) + 1)
        rows = self._rows()
        self.buffers[name][rows, slot] = value.to(self.buffers[name].dtype)
        if self.owner is not None:
            self.owner[rows, slot] = rows

    def fill_prefix(self, values: dict[str, Tensor], lengths: Tensor) -> None:
        """Prefill an empty cache: values[name] (B, S, *slot_shape) become slots 0..S-1 and
        `length` becomes `lengths` (B,). Slots past a row's ceil(length / stride) are ignored."""
        if self.batch_size and int(self.length.max()) > 0:
            raise ValueError("fill_prefix needs an empty cache")
        S = next(iter(values.values())).shape[1]
        self.reserve(max(S, 1))
        for name, val in values.items():
            self.buffers[name][:, :S] = val.to(self.buffers[name].dtype)
        self.length = lengths.to(self.length)
        if self.owner is not None:
            self.owner[:, :S] = self._rows()[:, None]

    def advance(self, n: int = 1) -> None:
        self.length = self.length + n

    def reorder(self, index: Tensor) -> None:
        """Sequence i becomes the old sequence index[i]. With ancestry only the owner table moves
        (index: (B,), same B, within beam groups); without, every buffer is copied (O(S))."""
        self.length = self.length.index_select(0, index)
        if self.owner is not None:
            self.owner = self.owner.index_select(0, index)
        else:
            self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}

    def expand(self, beam: int) -> None:
        """B sequences -> B * beam, each repeated `beam` times consecutively (beam search start).
        With ancestry the existing slots are stored once, in the group's first row."""
        if beam == 1:
            return
        index = self._rows().repeat_interleave(beam)
        if self.owner is None:
            self.reorder(index)
            return
        B, cap = self.batch_size, self.capacity
        first = self._rows() * beam
        for name, buf in self.buffers.items():
            grown = self._alloc((B * beam, cap, *buf.shape[2:]), buf.device, buf.dtype)
            grown[first] = buf
            self.buffers[name] = grown
        self.owner = (self.owner * beam).index_select(0, index)
        self.length = self.length.index_select(0, index)

    def elements_per_token(self) -> float:
        """Cached elements per token: slot elements summed over buffers, over stride."""
        return sum(math.prod(s) for s in self.slot_shapes.values()) / self.stride
