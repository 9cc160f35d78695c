"""SentencePiece training with fixed special ids, encode/decode, pickling, normalize_text."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from s2s.data.tokenizer import Tokenizer, normalize_text, train_sentencepiece

_VOCAB = "the cat sat on a mat while dog ran far away quickly slowly red blue green house speech"
WORDS = [*_VOCAB.split(" "), "translation", "model", "attention", "latent", "decoder"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.mark.parametrize("model_type", ["unigram", "bpe", "char"])
def test_train_fixed_ids_and_round_trip(tmp_path: Path, texts: list[str], model_type: str) -> None:
    tok = train_sentencepiece(
        iter(texts), tmp_path / "sub" / "m", vocab_size=60, model_type=model_type, num_threads=1
    )
    assert (tmp_path / "sub" / "m.model").is_file() and (tmp_path / "sub" / "m.vocab").is_file()
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert 4 < tok.vocab_size <= 60 and len(tok) == tok.vocab_size
    for t in texts[:20]:
        ids = tok.encode(t)
        assert ids and all(4 <= i < tok.vocab_size for i in ids)  # no specials, no unk
        assert tok.decode(ids) == t
        assert tok.decode(torch.tensor([2, *ids, 3, 0, 0])) == t  # specials are skipped
    if model_type == "char":
        assert len(tok.encode("cat")) == 4  # "▁", c, a, t
    # a character never seen in training is unk
    assert tok.unk_id in tok.encode("the Ж cat")
    reloaded = Tokenizer.from_file(tmp_path / "sub" / "m.model")
    assert reloaded.encode(texts[0]) == tok.encode(texts[0])


def test_vocab_size_is_a_soft_limit(tmp_path: Path, texts: list[str]) -> None:
    # far more pieces than this corpus supports: fewer pieces, not an error
    tok = train_sentencepiece(texts, tmp_path / "m", vocab_size=5000, num_threads=1)
    assert 4 < tok.vocab_size < 5000


def test_training_is_deterministic(tmp_path: Path, texts: list[str]) -> None:
    a = train_sentencepiece(texts, tmp_path / "a", 50, "bpe", num_threads=1)
    b = train_sentencepiece(texts, tmp_path / "b", 50, "bpe", num_threads=1)
    # the protos differ only in the recorded model_prefix: compare the vocabularies
    assert a.vocab_size == b.vocab_size
    assert [a.id_to_piece(i) for i in range(a.vocab_size)] == [
        b.id_to_piece(i) for i in range(b.vocab_size)
    ]
    assert a.encode(texts[3]) == b.encode(texts[3])


def test_training_errors(tmp_path: Path, texts: list[str]) -> None:
    with pytest.raises(ValueError, match="no non-empty training text"):
        train_sentencepiece(iter(["", "   ", "\n"]), tmp_path / "m", 50)
    with pytest.raises(ValueError, match="no non-empty training text"):
        train_sentencepiece([], tmp_path / "m", 50)
    with pytest.raises(ValueError, match="model_type"):
        train_sentencepiece(texts, tmp_path / "m", 50, model_type="word")
    with pytest.raises(ValueError, match="vocab_size"):
        train_sentencepiece(texts, tmp_path / "m", 4)
    # fewer pieces than distinct characters: SentencePiece's complaint, wrapped with the path
    with pytest.raises(ValueError, match=r"m\.model.*vocab_size=8"):
        train_sentencepiece(texts, tmp_path / "m", 8, num_threads=1)


def test_long_sentences_are_reported(tmp_path: Path, texts: list[str]) -> None:
    long = " ".join(["translation"] * 50)
    with pytest.warns(UserWarning, match="skipped 1 of 301 sentences longer than 200 bytes"):
        train_sentencepiece(
            [*texts, long], tmp_path / "m", 60, max_sentence_length=200, num_threads=1
        )


def test_embedded_newlines_do_not_split_sentences(tmp_path: Path, texts: list[str]) -> None:
    tok = train_sentencepiece(
        [t.replace(" ", "\n", 1) for t in texts], tmp_path / "m", 60, num_threads=1
    )
    assert tok.decode(tok.encode(texts[0])) == texts[0]


def test_pickle_round_trip(tmp_path: Path, texts: list[str]) -> None:
    tok = train_sentencepiece(texts, tmp_path / "m", 60, num_threads=1)
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.vocab_size == tok.vocab_size
    assert copy.encode(texts[5]) == tok.encode(texts[5])


def test_from_file_checks(tmp_path: Path, texts: list[str]) -> None:
    with pytest.raises(FileNotFoundError, match="nope.model"):
        Tokenizer.from_file(tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model"):
        Tokenizer.from_file(tmp_path / "junk.model")
    # SentencePiece's default ids (unk=0, bos=1, eos=2, no pad) are refused
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(tmp_path / "default"),
        vocab_size=40,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match=r"default\.model.*pad/unk/bos/eos"):
        Tokenizer.from_file(tmp_path / "default.model")


def test_decode_rejects_out_of_range(tmp_path: Path, texts: list[str]) -> None:
    tok = train_sentencepiece(texts, tmp_path / "m", 60, num_threads=1)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([5, tok.vocab_size])


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("  Hello,   World!\t", "none", "  Hello,   World!\t"),
        ("  Hello,   World!\t", "tc", "Hello, World!"),
        ("Line\none", "tc", "Line one"),
        ("ﬁne Ｔｅｘｔ", "tc", "fine Text"),  # NFKC
        ("  Hello,   World!\t", "lc.rm", "hello world"),
        ("Don't stop 'quoted' rock 'n' roll", "lc.rm", "don't stop quoted rock n roll"),
        ("It\u2019s O\u2019Neil\u2019s.", "lc.rm", "it's o'neil's"),
        ("well-known -- U.S.A. 3.5% $10 «ja» ¿qué?", "lc.rm", "wellknown usa 35 10 ja qué"),
        ("Ärger ÜBER Straße", "lc.rm", "ärger über straße"),
        ("...!?", "lc.rm", ""),
        ("x  &  y", "lc.rm", "x y"),
    ],
)
def test_normalize_text(text: str, mode: str, expected: str) -> None:
    assert normalize_text(text, mode) == expected


def test_normalize_text_unknown_mode() -> None:
    with pytest.raises(ValueError, match="lc.rm"):
        normalize_text("x", "lower")
