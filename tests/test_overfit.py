"""A tiny model memorises a handful of embedded-corpus utterances (synthesised English speech ->
German translation) for MHA, MLA and MTLA in all three decoder arrangements, and greedy decoding
then reproduces every training target exactly.

Training runs to a margin, not for a fixed number of steps: until every target token (EOS
included) has teacher-forced probability above 0.9, with a step cap far above what that needs.
A greedy step whose token has probability > 0.5 is the argmax whatever the float summation
order of the CPU, so the decoding assertion never sits on the edge of what training learned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import local_module

from s2s.attention import sweep_config
from s2s.data.dataset import collate
from s2s.data.features import compute_fbank, utterance_cmvn
from s2s.data.tokenizer import BOS_ID, EOS_ID, train_sentencepiece
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer
from s2s.models.decoder import DecoderConfig
from s2s.models.encoder import EncoderConfig
from s2s.models.seq2seq import ModelConfig, Seq2SeqModel, add_bos_eos
from s2s.synth.tts import synthesize

MARGIN = 0.9
MAX_STEPS = 3000  # every case reaches the margin in a few hundred
CHECK_EVERY = 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    grammar = local_module("phrases.grammar")
    pairs = grammar.generate_pairs(4, seed=3, kinds=["predicative"])  # short sentences: fast
    feats = [
        utterance_cmvn(compute_fbank(synthesize(p.en, voice="en-us", rate=210, seed=i)))
        for i, p in enumerate(pairs)
    ]
    prefix = Path(tmp_path_factory.mktemp("tok")) / "char"
    tok = train_sentencepiece([p.de for p in pairs], str(prefix), 64, model_type="char")
    items = [
        (str(i), f, torch.tensor(tok.encode(p.de))) for i, (f, p) in enumerate(zip(feats, pairs))
    ]
    return collate(items), tok, [p.de for p in pairs]


@pytest.mark.parametrize("arrangement", ["cross", "prefix", "prompt"])
@pytest.mark.parametrize("variant", ["mha", "mla", "mtla"])
def test_tiny_model_memorises_utterances(corpus, variant: str, arrangement: str) -> None:
    batch, tok, texts = corpus
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(
            d_model=64, n_heads=2, ffn_dim=128, n_layers=2, dropout=0.0, subsampling_channels=16
        ),
        decoder=DecoderConfig(
            n_layers=2,
            d_model=64,
            n_heads=2,
            ffn_dim=128,
            dropout=0.0,
            arrangement=arrangement,
            attention=sweep_config(variant, latent_dim=32, rope_dim=8, stride=2),
        ),
        label_smoothing=0.0,
    )
    model = Seq2SeqModel(cfg, tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 30))
    step = 0
    while (worst := min_target_probability(model, batch)) <= MARGIN:
        assert step < MAX_STEPS, f"{variant}/{arrangement}: min p {worst:.3f} after {step} steps"
        for _ in range(CHECK_EVERY):
            loss = model(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            warmup.step()
        step += CHECK_EVERY
    print(f"{variant}/{arrangement}: min p {worst:.3f} after {step} steps")

    model.eval()
    memory, memory_lens = model.encode(batch.src, batch.src_lens)
    cfg = BeamSearchConfig(beam_size=1, max_len_b=int(batch.tgt_lens.max()) + 5)
    scorers = search_scorers(cfg, DecoderScorer(model.decoder))
    hyps = beam_search(scorers, memory, memory_lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID)
    assert [tok.decode(h[0].tokens) for h in hyps] == texts


@torch.no_grad()
def min_target_probability(model: Seq2SeqModel, batch) -> float:
    """The smallest teacher-forced probability of any target token (EOS included)."""
    model.eval()
    memory, memory_lens = model.encode(batch.src, batch.src_lens)
    inp, out, lens = add_bos_eos(batch.tgt, batch.tgt_lens)
    logp = model.decoder(inp, lens, memory, memory_lens).float().log_softmax(-1)
    p = logp.gather(-1, out[..., None])[..., 0].exp()
    valid = torch.arange(out.shape[1])[None, :] < lens[:, None]
    model.train()
    return float(p[valid].min())
