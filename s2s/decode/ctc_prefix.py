"""CTC prefix scoring for joint attention/CTC beam search (Watanabe et al. 2017; ESPnet's
CTCPrefixScoreTH), a partial scorer (s2s.decode.scorers) vectorised over N hypotheses x W
candidate tokens.

For a prefix g and token c, psi(g + c) = P(the CTC output starts with g + c); for EOS,
psi = P(the CTC output is exactly g). Beam search adds weight * (log psi(g + c) - log psi(g)).
Forward variables r_t^n(g) (last frame emits the last label) and r_t^b(g) (last frame is a
blank) are kept per hypothesis, (T, 2, N). Frames past an utterance's length are padded so
that blank has probability 1 and every label 0: the recurrences then carry the mass through.

Over time the recursion runs frame by frame, two operations a frame on (N, W) tensors:

    r_t^n(g + c) = x_t(c) + logaddexp(r_{t-1}^n(g + c), phi_{t-1}(g)),
    r_t^b(g + c) = x_t(blank) + logaddexp(r_{t-1}^n(g + c), r_{t-1}^b(g + c)),

both in one logaddexp (r_{t-1}^n against phi_{t-1} and r_{t-1}^b side by side, written in
place) and one addition: the forward variables of the textbook loop of six operations a frame,
bit for bit. psi(g + c) sums phi_{t-1}(g) + x_t(c) over the frame t where c is first emitted;
phi comes from the previous step's forward variables, so that is one logsumexp over time (the
same up to float32 rounding). Solving the two first-order recurrences for every frame at once
(cumulative sums and logcumsumexp, in float64 for the subtraction of the sums) computes the same
scores in a fixed number of operations, but is slower on the CPU: PyTorch's CPU logcumsumexp is
a scalar loop, so that version took 3x this one's time per step at the demo's size and 4.6x at
beam 50 over 300 frames (docs/engine.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.decode.scorers import SearchInit

NEG = -1e30  # finite "log 0": keeps logaddexp free of inf - inf


@dataclass
class CTCPrefixState:
    """One search's CTC state over N = U * K rows, allocated at init_state."""

    x: Tensor  # (T, U, V) log-posteriors; padded frames: blank 0, labels NEG
    utt: Tensor  # (N,) each row's utterance
    end: Tensor  # (N,) each row's last real frame
    r: Tensor  # (T, 2, N) log forward variables of each hypothesis's prefix
    log_psi: Tensor  # (N,) log prefix probability of each hypothesis
    last: Tensor  # (N,) last label of each prefix (-1 for the empty prefix)
    buf: Tensor | None = None  # (T, 3, N, W) per frame [r^n, phi, r^b] of the candidates
    delta: Tensor | None = None  # (N, W): the latest score


class CTCPrefixScorer:
    """Partial scorer. log_probs: the CTC head, encoder output (U, S, d) -> (U, S, V)
    log-posteriors over the same frames (Seq2SeqModel.ctc_log_probs; None without a head);
    blank and EOS ids."""

    partial = True
    fixed_shapes = False

    def __init__(self, log_probs: Callable[[Tensor], Tensor | None], blank: int, eos: int) -> None:
        self.log_probs = log_probs
        self.blank, self.eos = blank, eos

    def init_state(self, search: SearchInit) -> CTCPrefixState:
        lp = self.log_probs(search.memory)
        if lp is None:
            raise ValueError(
                "ctc_weight > 0 but the model has no CTC head (train with model.ctc_weight > 0)"
            )
        lengths = search.memory_lens
        U, T, V = lp.shape
        pad = torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]  # (U, T)
        x = lp.float().masked_fill(pad[..., None], NEG)
        x[..., self.blank] = x[..., self.blank].masked_fill(pad, 0.0)
        x = x.transpose(0, 1).contiguous()  # (T, U, V): once per utterance, read per row
        utt = torch.arange(U, device=lengths.device).repeat_interleave(search.beam)
        N = utt.shape[0]
        r = torch.full((T, 2, N), NEG, device=x.device)
        r[:, 1] = x[:, utt, self.blank].cumsum(0)
        return CTCPrefixState(
            x=x,
            utt=utt,
            end=(lengths - 1)[utt],
            r=r,
            log_psi=torch.zeros(N, device=x.device),
            last=torch.full((N,), -1, dtype=torch.long, device=x.device),
        )

    def score(self, state: CTCPrefixState, tokens: Tensor, cand: Tensor | None) -> Tensor:
        """cand: (N, W) -> float64 log psi(g + c) - log psi(g), (N, W); the candidates'
        forward variables wait in the state for `select`."""
        assert cand is not None, "the CTC prefix scorer scores the pre-beam's candidates"
        T, U, V = state.x.shape
        N, W = cand.shape
        # x2[t] = (x_t(c), x_t(blank)) of each row's utterance: one gather of (T, 2, N, W)
        base = (state.utt * V)[:, None]
        cols = torch.stack((base + cand, (base + self.blank).expand(-1, W)))  # (2, N, W)
        x2 = state.x.view(T, U * V).index_select(1, cols.view(-1)).view(T, 2, N, W)
        xc = x2[:, 0]  # (T, N, W)
        r_prev = state.r  # (T, 2, N)
        total = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
        # Per frame [r^n, phi, r^b]. phi_t: mass after frame t from which c can start; a
        # repeated label needs a blank in between.
        if state.buf is None or state.buf.shape[-1] != W:  # once per search: W stays
            state.buf = torch.empty((T, 3, N, W), device=xc.device)
        buf = state.buf
        same = (cand == state.last[:, None])[None]  # (1, N, W)
        buf[:, 1] = torch.where(same, r_prev[:, 1, :, None], total[:, :, None])
        empty = (state.last < 0)[:, None]  # only the empty prefix emits c at frame 0
        buf[0, 0] = torch.where(empty, xc[0], torch.full_like(xc[0], NEG))
        buf[0, 2] = NEG
        # psi sums over the frame c is first emitted at: phi_{t-1} + x_t(c) for t >= 1, which
        # the previous step's forward variables fix, so one logsumexp over time.
        phi_x = buf[:-1, 1] + xc[1:]  # (T - 1, N, W)
        log_psi = torch.logaddexp(buf[0, 0], torch.logsumexp(phi_x, 0)) if T > 1 else buf[0, 0]
        x2 = x2.unbind(0)  # per frame (2, N, W)
        rn, pair, out = buf[:, :1].unbind(0), buf[:, 1:].unbind(0), buf[:, ::2].unbind(0)
        for t in range(1, T):
            torch.logaddexp(rn[t - 1], pair[t - 1], out=out[t])  # (r^n, r^b) - x
            out[t].add_(x2[t])
        # EOS: the whole output is g, so psi = r^n(g) + r^b(g) at the last real frame.
        end_total = total.gather(0, state.end[None])[0]  # (N,)
        log_psi = torch.where(cand == self.eos, end_total[:, None], log_psi)
        log_psi = log_psi.masked_fill(cand == self.blank, NEG)
        state.delta = log_psi - state.log_psi[:, None]
        return state.delta.double()

    def select(self, state: CTCPrefixState, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        state.r.copy_(state.buf[:, ::2, rows, cols])  # the chosen candidates' (r^n, r^b)
        state.log_psi.copy_(state.log_psi[rows] + state.delta[rows, cols])
        state.last.copy_(tokens)

    def keep(self, state: CTCPrefixState, rows: Tensor) -> CTCPrefixState:
        """The kept rows' utterances, renumbered; the frames past the last one's end are cut
        (they only carry mass the recursion no longer reads)."""
        K = state.utt.shape[0] // state.x.shape[1]
        utts = state.utt[rows[::K]]
        end = state.end.index_select(0, rows)
        T = int(end.max()) + 1
        return CTCPrefixState(
            x=state.x[:T].index_select(1, utts),
            utt=torch.arange(utts.shape[0], device=rows.device).repeat_interleave(K),
            end=end,
            r=state.r[:T].index_select(2, rows),
            log_psi=state.log_psi.index_select(0, rows),
            last=state.last.index_select(0, rows),
        )

    def peak_cache_bytes(self, state: CTCPrefixState) -> int:
        return 0  # no attention caches: its forward variables are not counted as one
