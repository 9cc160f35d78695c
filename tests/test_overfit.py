"""A tiny model memorises a handful of embedded-corpus utterances (synthesised English speech ->
German translation) for MHA, MLA and MTLA in both decoder arrangements: the training loss falls
under a threshold and greedy decoding reproduces every training target exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2s.attention.config import AttentionConfig
from s2s.corpora.phrases.grammar import generate_pairs
from s2s.corpora.phrases.tts import synthesize
from s2s.data.dataset import collate
from s2s.data.features import compute_fbank, utterance_cmvn
from s2s.data.tokenizer import train_sentencepiece
from s2s.decode.beam_search import BeamSearchConfig, beam_search
from s2s.models.decoder import DecoderConfig
from s2s.models.encoder import EncoderConfig
from s2s.models.seq2seq import BOS_ID, EOS_ID, ModelConfig, Seq2SeqModel

STEPS = 250


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    pairs = generate_pairs(4, seed=3, kinds=["predicative"])  # short sentences: fast
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


@pytest.mark.parametrize("arrangement", ["cross", "prefix"])
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
            attention=AttentionConfig(type=variant, latent_dim=32, rope_dim=8, stride=2),
        ),
        label_smoothing=0.0,
    )
    model = Seq2SeqModel(cfg, tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 30))
    for _ in range(STEPS):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
    assert loss.item() < 0.05, f"{variant}/{arrangement}: loss {loss.item():.3f} after {STEPS}"

    model.eval()
    memory, memory_lens = model.encode(batch.src, batch.src_lens)
    hyps = beam_search(
        model.decoder,
        memory,
        memory_lens,
        BeamSearchConfig(beam_size=1, max_len_b=int(batch.tgt_lens.max()) + 5),
        bos_id=BOS_ID,
        eos_id=EOS_ID,
    )
    assert [tok.decode(h[0].tokens) for h in hyps] == texts
