"""CTC prefix scoring for joint attention/CTC beam search (Watanabe et al. 2017; ESPnet's
CTCPrefixScoreTH), a partial scorer (s2s.decode.scorers) vectorised over N hypotheses x W
candidate tokens.

For a prefix g and token c, psi(g + c) = P(the CTC output starts with g + c); for EOS,
psi = P(the CTC output is exactly g). Beam search adds weight * (log psi(g + c) - log psi(g)).
Forward variables r_t^n(g) (last frame emits the last label) and r_t^b(g) (last frame is a
blank) are kept per hypothesis, (T, 2, N). Frames past an utterance's length are padded so
that blank has probability 1 and every label 0: the recurrences then carry the mass through.
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

    x: Tensor  # (T, N, V) log-posteriors; padded frames: blank 0, labels NEG
    end: Tensor  # (N,) each row's last real frame
    r: Tensor  # (T, 2, N) log forward variables of each hypothesis's prefix
    log_psi: Tensor  # (N,) log prefix probability of each hypothesis
    last: Tensor  # (N,) last label of each prefix (-1 for the empty prefix)
    r_cand: Tensor | None = None  # (T, 2, N, W): the latest score's candidates
    delta: Tensor | None = None  # (N, W): the latest score


class CTCPrefixScorer:
    """Partial scorer. log_probs: the CTC head, encoder output (U, S, d) -> (U, S, V)
    log-posteriors over the same frames (Seq2SeqModel.ctc_log_probs; None without a head);
    blank and EOS ids."""

    partial = True

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
        B, T, V = lp.shape
        x = lp.float().masked_fill(
            torch.arange(T, device=lengths.device)[None, :, None] >= lengths[:, None, None], NEG
        )
        pad = torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]
        x[..., self.blank] = x[..., self.blank].masked_fill(pad, 0.0)
        x = x.repeat_interleave(search.beam, 0).transpose(0, 1)  # (T, N, V)
        N = x.shape[1]
        r = torch.full((T, 2, N), NEG, device=x.device)
        r[:, 1] = x[:, :, self.blank].cumsum(0)
        return CTCPrefixState(
            x=x,
            end=(lengths - 1).repeat_interleave(search.beam),
            r=r,
            log_psi=torch.zeros(N, device=x.device),
            last=torch.full((N,), -1, dtype=torch.long, device=x.device),
        )

    def score(self, state: CTCPrefixState, tokens: Tensor, cand: Tensor | None) -> Tensor:
        """cand: (N, W) -> log psi(g + c) - log psi(g), (N, W); the candidates' forward
        variables wait in the state for `select`."""
        assert cand is not None, "the CTC prefix scorer scores the pre-beam's candidates"
        T, N, _ = state.x.shape
        W = cand.shape[1]
        xc = state.x.gather(2, cand[None].expand(T, -1, -1))  # (T, N, W)
        r_prev = state.r  # (T, 2, N)
        total = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
        # phi_t: mass after frame t from which c can start; a repeated label needs a blank.
        same = (cand == state.last[:, None])[None]  # (1, N, W)
        phi = torch.where(same, r_prev[:, 1, :, None], total[:, :, None])  # (T, N, W)
        r = torch.full((T, 2, N, W), NEG, device=xc.device)
        empty = (state.last < 0)[:, None]
        r[0, 0] = torch.where(empty, xc[0], torch.full_like(xc[0], NEG))
        log_psi = r[0, 0].clone()
        xb = state.x[:, :, self.blank][:, :, None]  # (T, N, 1)
        for t in range(1, T):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]
            log_psi = torch.logaddexp(log_psi, phi[t - 1] + xc[t])
        # EOS: the whole output is g, so psi = r_T^n(g) + r_T^b(g) at the last real frame.
        end_total = total.gather(0, state.end[None])[0]  # (N,)
        log_psi = torch.where(cand == self.eos, end_total[:, None], log_psi)
        log_psi = log_psi.masked_fill(cand == self.blank, NEG)
        state.r_cand, state.delta = r, log_psi - state.log_psi[:, None]
        return state.delta.double()

    def select(self, state: CTCPrefixState, rows: Tensor, cols: Tensor, tokens: Tensor) -> None:
        state.r.copy_(state.r_cand[:, :, rows, cols])
        state.log_psi.copy_(state.log_psi[rows] + state.delta[rows, cols])
        state.last.copy_(tokens)

    def peak_cache_bytes(self, state: CTCPrefixState) -> int:
        return 0  # no attention caches: its forward variables are not counted as one
