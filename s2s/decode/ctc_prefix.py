"""CTC prefix scoring for joint attention/CTC beam search (Watanabe et al. 2017; ESPnet's
CTCPrefixScoreTH), vectorised over N hypotheses x W candidate tokens.

For a prefix g and token c, psi(g + c) = P(the CTC output starts with g + c); for EOS,
psi = P(the CTC output is exactly g). Beam search adds weight * (log psi(g + c) - log psi(g)).
Forward variables r_t^n(g) (last frame emits the last label) and r_t^b(g) (last frame is a
blank) are kept per hypothesis, (T, 2, N). Frames past an utterance's length are padded so
that blank has probability 1 and every label 0: the recurrences then carry the mass through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG = -1e30  # finite "log 0": keeps logaddexp free of inf - inf


@dataclass
class CTCPrefixState:
    r: Tensor  # (T, 2, N) log forward variables of each hypothesis's prefix
    log_psi: Tensor  # (N,) log prefix probability of each hypothesis
    last: Tensor  # (N,) last label of each prefix (-1 for the empty prefix)


class CTCPrefixScorer:
    """log_probs: (B, T, V) CTC log-posteriors, lengths (B,), blank and EOS ids; hypotheses are
    B * beam rows, those of one utterance adjacent."""

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int, eos: int, beam: int) -> None:
        B, T, V = log_probs.shape
        x = log_probs.float().masked_fill(
            torch.arange(T, device=lengths.device)[None, :, None] >= lengths[:, None, None], NEG
        )
        pad = torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]
        x[..., blank] = x[..., blank].masked_fill(pad, 0.0)
        self.x = x.repeat_interleave(beam, 0).transpose(0, 1)  # (T, N, V)
        self.blank, self.eos = blank, eos
        self.end = (lengths - 1).repeat_interleave(beam)  # (N,) last real frame

    def initial_state(self) -> CTCPrefixState:
        T, N, _ = self.x.shape
        r = torch.full((T, 2, N), NEG, device=self.x.device)
        r[:, 1] = self.x[:, :, self.blank].cumsum(0)
        return CTCPrefixState(
            r,
            torch.zeros(N, device=self.x.device),
            torch.full((N,), -1, dtype=torch.long, device=self.x.device),
        )

    def score(self, state: CTCPrefixState, cand: Tensor) -> tuple[Tensor, Tensor]:
        """cand: (N, W) candidate tokens. Returns (delta (N, W) = log psi(g+c) - log psi(g),
        r_new (T, 2, N, W)) for `select`."""
        T, N, _ = self.x.shape
        W = cand.shape[1]
        xc = self.x.gather(2, cand[None].expand(T, -1, -1))  # (T, N, W)
        r_prev = state.r  # (T, 2, N)
        total = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
        # phi_t: mass after frame t from which c can start; a repeated label needs a blank.
        same = (cand == state.last[:, None])[None]  # (1, N, W)
        phi = torch.where(same, r_prev[:, 1, :, None], total[:, :, None])  # (T, N, W)
        r = torch.full((T, 2, N, W), NEG, device=xc.device)
        empty = (state.last < 0)[:, None]
        r[0, 0] = torch.where(empty, xc[0], torch.full_like(xc[0], NEG))
        log_psi = r[0, 0].clone()
        xb = self.x[:, :, self.blank][:, :, None]  # (T, N, 1)
        for t in range(1, T):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]
            log_psi = torch.logaddexp(log_psi, phi[t - 1] + xc[t])
        # EOS: the whole output is g, so psi = r_T^n(g) + r_T^b(g) at the last real frame.
        end_total = total.gather(0, self.end[None])[0]  # (N,)
        log_psi = torch.where(cand == self.eos, end_total[:, None], log_psi)
        log_psi = log_psi.masked_fill(cand == self.blank, NEG)
        return log_psi - state.log_psi[:, None], r

    def select(
        self,
        state: CTCPrefixState,
        r_new: Tensor,
        delta: Tensor,
        rows: Tensor,
        cols: Tensor,
        tokens: Tensor,
    ) -> CTCPrefixState:
        """New state of hypotheses extending row rows[i] by candidate column cols[i] (token
        tokens[i]). rows, cols, tokens: (N,)."""
        r = r_new[:, :, rows, cols]  # (T, 2, N)
        log_psi = state.log_psi[rows] + delta[rows, cols]
        return CTCPrefixState(r, log_psi, tokens)
