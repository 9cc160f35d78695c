"""Plain helpers shared by several test modules (fixtures live in conftest.py): the toy model
and data of the trainer tests, a tiny text-to-text experiment on disk, a small decoder for the
beam-search tests, miniature copies of each real corpus's published layout, and the recipe copier.
Test modules import from here, never from each other."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from s2s.attention import sweep_config
from s2s.data.datadir import write_datadir
from s2s.data.dataset import Batch, collate
from s2s.data.sampler import BucketBatchSampler
from s2s.data.tokenizer import train_sentencepiece
from s2s.decode.beam_search import BeamSearchConfig, Hypothesis, beam_search
from s2s.decode.ctc_prefix import CTCPrefixScorer
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer, LMScorer, Scorer
from s2s.experiment import ExperimentConfig, build_model, save_experiment_config
from s2s.models.decoder import Decoder, DecoderConfig
from s2s.models.lm import LMConfig, TransformerLM
from s2s.recipe.corpus import load_corpus_module
from s2s.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def local_module(name: str) -> ModuleType:
    """A corpus module of the repository's local/ (``"must_c"``, ``"phrases.grammar"``), loaded
    as recipe stage 1 loads it: by path, never by the name ``local``."""
    return load_corpus_module(REPO, name)


# --- the trainer's toy data and model (test_trainer.py, test_ddp.py) -------------------------

VOCAB = 8


class ToyDataset(Dataset):
    """Random (T, 4) feature sequences; targets (L,) are a deterministic function of them.
    Utterances in `poison` get NaN features (their loss is NaN)."""

    def __init__(self, n: int = 24, seed: int = 0, poison: frozenset[str] = frozenset()) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            T = int(torch.randint(3, 9, (1,), generator=g))
            L = int(torch.randint(1, 4, (1,), generator=g))
            x = torch.randn(T, 4, generator=g)
            y = 4 + (x[:L, 0] > 0).long() + 2 * (x[:L, 1] > 0).long()
            utt = f"utt{i:03d}"
            if utt in poison:
                x = torch.full_like(x, float("nan"))
            self.items.append((utt, x, y))
        self.lengths = [x.shape[0] for _, x, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class ToyModel(nn.Module):
    """GRU encoder -> per-target-position classifier; follows the model training interface."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, hidden, batch_first=True)
        self.pos = nn.Embedding(4, hidden)
        self.drop = nn.Dropout(0.3)  # exercises the RNG state on resume
        self.out = nn.Linear(hidden, VOCAB)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # an int buffer

    def forward(self, batch) -> dict:
        h, _ = self.rnn(batch.src)  # (B, T, H)
        last = h[torch.arange(h.shape[0]), batch.src_lens - 1]  # (B, H)
        L = batch.tgt.shape[1]
        z = self.drop(last[:, None] + self.pos.weight[:L])  # (B, L, H)
        logits = self.out(z)  # (B, L, V)
        mask = batch.tgt != 0
        n = mask.sum()
        ce = nn.functional.cross_entropy(logits[mask], batch.tgt[mask], reduction="sum")
        acc = (logits.argmax(-1)[mask] == batch.tgt[mask]).float().sum() / n
        if self.training:
            self.updates += 1
        return {"loss": ce / n, "acc": acc, "n_tokens": n}


def make_loader(ds: ToyDataset, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
    sampler = BucketBatchSampler(
        ds.lengths, 24, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank
    )
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate)


def make_cfg(**kw) -> TrainConfig:
    base = dict(
        device="cpu",
        lr=1e-2,
        warmup_steps=3,
        scheduler="noam",
        max_epochs=3,
        accum_grad=2,
        log_every_steps=1,
        keep_last=0,
        keep_best=0,
        n_average=1,
    )
    base.update(kw)
    return TrainConfig(**base)


# --- a tiny text-to-text experiment for s2s-train (test_trainer.py, test_ddp.py) -------------


def text_experiment(root: Path, n_train: int, n_dev: int, max_frames: int) -> list[str]:
    """A tiny text-to-text experiment on disk (data dirs train/ and dev/ with text.src and
    text.tgt, a SentencePiece model); returns the s2s-train overrides that point at it, with a
    one-layer encoder and decoder on the CPU."""
    rnd = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "zeta", "theta", "kappa", "lambda"]
    texts = []
    for name, n in (("train", n_train), ("dev", n_dev)):
        src = {
            f"{name}{i:03d}": " ".join(rnd.choices(words, k=rnd.randint(3, 6))) for i in range(n)
        }
        tgt = {u: " ".join(s.split()[:2]) for u, s in src.items()}
        write_datadir(root / name, None, {"text.src": src, "text.tgt": tgt}, {u: u for u in src})
        texts += [*src.values(), *tgt.values()]
    train_sentencepiece(texts, root / "tok", 30)
    return [
        "data.source=text", "data.source_field=text.src", "data.target_field=text.tgt",
        f"data.train_dir={root / 'train'}", f"data.valid_dir={root / 'dev'}",
        f"data.tokenizer={root / 'tok.model'}", f"data.max_frames={max_frames}",
        "model.encoder.n_layers=1", "model.decoder.n_layers=1",
        "train.device=cpu", "train.warmup_steps=5",
    ]  # fmt: skip


# --- a small decoder for the beam-search tests (test_beam_search.py, test_ctc_prefix.py) -----

BOS, EOS, V = 2, 3, 23


def text_batch(src_lens: list[int], tgt_lens: list[int], vocab: int = 40) -> Batch:
    """A padded batch for a text-source model (utterances utt0, utt1, ...): random ids 4..vocab-1,
    0 (padding) past each length. Draws from torch's global generator."""
    src, tgt = torch.tensor(src_lens), torch.tensor(tgt_lens)
    S, L = int(src.max()), int(tgt.max())
    return Batch(
        [f"utt{i}" for i in range(len(src_lens))],
        torch.randint(4, vocab, (len(src_lens), S)) * (torch.arange(S) < src[:, None]),
        src,
        torch.randint(4, vocab, (len(tgt_lens), L)) * (torch.arange(L) < tgt[:, None]),
        tgt,
    )


def make_decoder(arrangement: str, variant: str, stride: int, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    attn = sweep_config(variant, stride=stride, latent_dim=16, rope_dim=4)
    cfg = DecoderConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        ffn_dim=64,
        dropout=0.0,
        arrangement=arrangement,
        attention=attn,
        tie_embeddings=False,
    )
    dec = Decoder(cfg, vocab_size=V, memory_dim=24).eval()
    with torch.no_grad():  # make EOS likely enough that hypotheses end at different lengths
        dec.output.weight[EOS] *= 3.0
    return dec


def scorers_for(
    cfg: BeamSearchConfig,
    decoder: Scorer,
    ctc: torch.Tensor | None = None,
    lm: TransformerLM | None = None,
    blank: int = 0,
) -> dict:
    """The weighted set cfg asks for over decoder (a scorer), CTC prefix scores of the
    log-posteriors ctc (B, S, V) and the LM."""
    return search_scorers(
        cfg,
        decoder,
        ctc=None if ctc is None else CTCPrefixScorer(lambda memory: ctc, blank, EOS),
        lm=None if lm is None else LMScorer(lm),
    )


def search(
    dec, memory, memory_lens, cfg: BeamSearchConfig, *, ctc=None, lm=None, **kw
) -> list[list[Hypothesis]]:
    """beam_search with make_decoder's BOS and EOS over the weighted set cfg asks for: the
    decoder dec (a Decoder or an OnnxDecoder), ctc's prefix scores and the LM lm."""
    return beam_search(
        scorers_for(cfg, DecoderScorer(dec), ctc, lm),
        memory, memory_lens, cfg, bos_id=BOS, eos_id=EOS, **kw,
    )  # fmt: skip


def make_lm(variant: str = "mtla", stride: int = 2, seed: int = 0) -> TransformerLM:
    """A small target-side LM over make_decoder's vocabulary (test_lm.py, test_export.py)."""
    torch.manual_seed(seed)
    attn = sweep_config(variant, stride=stride, latent_dim=16, rope_dim=4)
    cfg = LMConfig(
        n_layers=2, d_model=32, n_heads=4, ffn_dim=64, dropout=0.0, attention=asdict(attn)
    )
    return TransformerLM(cfg, V).eval()


# --- miniature corpora in their published layouts (test_corpora.py, test_real_recipes.py) ----

SR = 16000


def write_audio(path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """A short noise file (wav or flac by suffix); returns the samples as written (PCM_16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.uniform(-0.5, 0.5, int(SR * seconds)).astype(np.float32)
    sf.write(path, data, SR, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


# The four kinds of bad audio real corpora hold: what stage 3, dump_features and
# s2s-validate-data --audio must all report in one pass. name -> (file name, reason pattern).
BAD_AUDIO = {
    "corrupt": ("corrupt.wav", "cannot read audio: .*Malformed 'fmt ' chunk"),
    "notaudio": ("notes.wav", "cannot read audio: .*Format not recognised"),
    "short": ("short.wav", "too short"),
    "missing": ("missing.wav", "not found"),
}


def write_bad_audio(root: Path) -> dict[str, Path]:
    """BAD_AUDIO's files under root: a wav whose RIFF 'fmt ' chunk is zeroed, a text file named
    .wav, a 30 ms wav (one fbank frame), and a path that does not exist. name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / file for name, (file, _) in BAD_AUDIO.items()}
    write_audio(paths["corrupt"], 0.5)
    riff = bytearray(paths["corrupt"].read_bytes())
    riff[20:36] = bytes(16)  # the fmt chunk's format, channels, rate, ...
    paths["corrupt"].write_bytes(bytes(riff))
    paths["notaudio"].write_text("this is not audio\n")
    write_audio(paths["short"], 0.03)
    return paths


def write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


MUSTC_SEGS = {
    # split: [(wav, offset, duration, en, de)]
    "train": [
        ("ted_1.wav", 0.25, 1.0, "Hello there.", "Hallo zusammen."),
        ("ted_1.wav", 1.5, 0.75, "Thank you.", "Danke."),
        ("ted_12.wav", 0.0, 1.2345, "Second talk.", "Zweiter Vortrag."),
    ],
    "dev": [("ted_767.wav", 0.5, 1.0, "A dev line.", "Eine Zeile.")],
    "tst-COMMON": [("ted_1096.wav", 0.1, 0.5, "Test.", "Test.")],
    "tst-HE": [("ted_1169.wav", 0.2, 0.6, "Other test.", "Anderer Test.")],
}


def make_mustc(root: Path) -> Path:
    data = root / "en-de" / "data"
    for i, (split, segs) in enumerate(MUSTC_SEGS.items()):
        for j, wav in enumerate(sorted({s[0] for s in segs})):
            write_audio(data / split / "wav" / wav, 3.0, seed=10 * i + j)
        yaml_lines = [
            f"- {{duration: {d:.6f}, offset: {o:.6f}, speaker_id: spk.{w[4:-4]}, wav: {w}}}"
            for w, o, d, _, _ in segs
        ]
        write_text(data / split / "txt" / f"{split}.yaml", yaml_lines)
        write_text(data / split / "txt" / f"{split}.en", [s[3] for s in segs])
        write_text(data / split / "txt" / f"{split}.de", [s[4] for s in segs])
    return root


LIBRI = {
    "dev-clean": {("84", "121123"): ["GO DO YOU HEAR", "BUT IN LESS THAN FIVE MINUTES"]},
    "test-clean": {
        ("1089", "134686"): ["HE HOPED THERE WOULD BE STEW"],
        ("121", "121726"): ["ALSO A POPULAR CONTRIVANCE", "A SECOND LINE"],
    },
}


def make_librispeech(root: Path) -> Path:
    seed = 0
    for subset, chapters in LIBRI.items():
        for (spk, chap), lines in chapters.items():
            d = root / "LibriSpeech" / subset / spk / chap
            rows = []
            for k, words in enumerate(lines):
                utt = f"{spk}-{chap}-{k:04d}"
                write_audio(d / f"{utt}.flac", 0.3 + 0.1 * k, seed=seed)
                seed += 1
                rows.append(f"{utt} {words}")
            write_text(d / f"{spk}-{chap}.trans.txt", rows)
    return root


AMI_ROWS = [
    "ES2011a H00 FEE041 34.15 34.84 OKAY",
    "ES2011a H01 MEE042 1.0 2.5 HELLO EVERYONE",
    "ES2011a H00 FEE041 34.15 34.84 OKAY",  # exact duplicate, as the export has
    "EN2002a H02 FEO070 0.5 1.25 YEAH",
    "ES2002a H03 MEE008 2.0 3.0 UM SO",
    "ES2002a H03 MEE008 3.1 3.9 RIGHT",
]


def make_ami(root: Path) -> Path:
    for k, (meeting, n) in enumerate(
        [("ES2011a", 0), ("ES2011a", 1), ("EN2002a", 2), ("ES2002a", 3)]
    ):
        write_audio(
            root / "amicorpus" / meeting / "audio" / f"{meeting}.Headset-{n}.wav",
            2.0 if meeting == "EN2002a" else 35.0 if n == 0 else 4.0,
            seed=k,
        )
    write_text(root / "annotations" / "transcripts2", AMI_ROWS)
    return root


SLURP_PROMPTS = {
    "train": [
        {
            "slurp_id": 1,
            "sentence": "wake me up at five am",
            "intent": "alarm_set",
            "action": "set",
            "scenario": "alarm",
            "recordings": [
                {"file": "audio-1434542201-headset.flac", "wer": 0.0},
                {"file": "audio-1434542201.flac", "wer": 0.1},
            ],
        },
        {
            "slurp_id": 2,
            "sentence": "olly quiet",
            "intent": "audio_volume_mute",
            "action": "volume_mute",
            "scenario": "audio",
            "recordings": [{"file": "audio-1490000000.flac"}],
        },
    ],
    "devel": [
        {
            "slurp_id": 3,
            "sentence": "what is the weather",
            "intent": "weather_query",
            "action": "query",
            "scenario": "weather",
            "recordings": [
                {"file": "audio-1500000000-headset.flac"},
                {"file": "audio-1490000000.flac"},
            ],
        },  # also in train: skipped
    ],
    "test": [
        {
            "slurp_id": 4,
            "sentence": "play jazz",
            "intent": "play_music",
            "action": "music",
            "scenario": "play",
            "recordings": [{"file": "audio-1600000000.flac"}],
        },
    ],
}
SLURP_SPEAKERS = {
    "audio-1434542201-headset.flac": "MO-433",
    "audio-1434542201.flac": "MO-433",
    "audio-1490000000.flac": "MO-4330",  # a speaker id extending another
    "audio-1500000000-headset.flac": "UNK-326",
    "audio-1600000000.flac": "FO-232",
}


def make_slurp(root: Path, metadata: bool = True) -> Path:
    text_dir = root / "dataset" / "slurp"
    for k, (name, prompts) in enumerate(SLURP_PROMPTS.items()):
        write_text(text_dir / f"{name}.jsonl", [json.dumps(p) for p in prompts])
        for j, p in enumerate(prompts):
            for r in p["recordings"]:
                write_audio(root / "audio" / "slurp_real" / r["file"], 0.25, seed=10 * k + j)
    if metadata:
        meta = {
            "0": {"recordings": {f: {"usrid": u} for f, u in SLURP_SPEAKERS.items()}},
        }
        (text_dir / "metadata.json").write_text(json.dumps(meta))
    return root


XSUM = {
    "train": [
        (
            "29750031",
            "The full cost of damage\nin Newton Stewart is still being assessed.",
            "Clean-up operations are continuing.",
        ),
        ("38264402", "A fire alarm went off.\n\nPeople left.", "A fire alarm sounded."),
    ],
    "validation": [("11154244", "Officers searched.", "Police searched a house.")],
    "test": [("38295789", "Prison governors spoke.", "Governors warned of danger.")],
}


def make_xsum(root: Path) -> Path:
    """XSUM as Hugging Face jsonl files, one per split."""
    for name, rows in XSUM.items():
        write_text(
            root / f"{name}.jsonl",
            [json.dumps({"document": d, "summary": s, "id": i}) for i, d, s in rows],
        )
    return root


# --- a tiny untrained experiment for decoding (test_decode_cli.py, test_pack.py, ...) ------

SENTENCES = [
    f"the {c} {o} number {i}"
    for i, (c, o) in enumerate(
        [(c, o) for c in ("red", "green", "blue", "small") for o in ("cup", "dog", "bird", "house")]
    )
]


def _tiny_model_cfg(cfg: ExperimentConfig, text: bool) -> None:
    enc, dec = cfg.model.encoder, cfg.model.decoder
    enc.type = "text" if text else "transformer"
    enc.subsampling = "none" if text else "conv2d4"
    enc.d_model = dec.d_model = 32
    enc.n_heads = dec.n_heads = 2
    enc.ffn_dim = dec.ffn_dim = 64
    enc.n_layers = dec.n_layers = 1
    dec.attention = {"type": "mtla", "latent_dim": 16, "rope_dim": 8}
    cfg.decode.beam_size = 3
    cfg.decode.nbest = 2
    cfg.decode.max_len_b = 6
    cfg.decode.max_len_a = 0.0


def make_exp(root: Path, text: bool = False, ctc: float = 0.0) -> Path:
    """A tiny untrained (seeded) experiment dir under root: config.yaml, tokenizer.model and
    model_avg.pt, a speech (conv2d4 transformer) or text encoder and an MTLA decoder; with
    ctc > 0, a CTC head, decoded jointly with that weight."""
    exp = root / ("exp_text" if text else "exp_speech")
    exp.mkdir(parents=True)
    tok = train_sentencepiece(SENTENCES * 4, str(exp / "tokenizer"), vocab_size=48)
    cfg = ExperimentConfig()
    _tiny_model_cfg(cfg, text)
    cfg.model.ctc_weight = cfg.decode.ctc_weight = ctc
    cfg.data.tokenizer = "tokenizer.model"  # relative to config.yaml, as s2s-train writes it
    if text:
        cfg.data.source, cfg.data.source_field = "text", "text.src"
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size)
    torch.save(model.state_dict(), exp / "model_avg.pt")
    save_experiment_config(cfg, exp / "config.yaml")
    return exp


# --- recipes copied into a temporary tree (test_recipes.py, test_real_recipes.py) -----------

TRAIN = [
    "train.max_steps=4",
    "train.max_epochs=2",
    "train.warmup_steps=2",
    "train.log_every_steps=1",
    "train.keep_best=2",
    "train.n_average=2",
    "data.max_frames=4000",
    "decode.beam_size=2",
    "decode.max_len_b=8",
]


def copy_recipe(tmp: Path, name: str, shrink: dict) -> Path:
    shutil.copytree(REPO / "conf", tmp / "conf")
    shutil.copytree(REPO / "local", tmp / "local", ignore=shutil.ignore_patterns("__pycache__"))
    dst = tmp / "recipes" / name
    shutil.copytree(REPO / "recipes" / name / "conf", dst / "conf")
    shutil.copy(REPO / "recipes" / name / "run.sh", dst / "run.sh")
    shutil.copy(REPO / "recipes" / "recipe.sh", tmp / "recipes" / "recipe.sh")
    cfg = OmegaConf.merge(OmegaConf.load(dst / "conf" / "recipe.yaml"), shrink)
    OmegaConf.save(cfg, dst / "conf" / "recipe.yaml")
    return dst
