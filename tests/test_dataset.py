"""SpeechDataset over a real feature dump, TextPairDataset, collate, and the DataLoader path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from s2s.data.datadir import write_datadir
from s2s.data.dataset import Batch, SpeechDataset, TextPairDataset, collate
from s2s.data.features import (
    FeatureReader,
    GlobalCMVN,
    compute_cmvn_stats,
    dump_features,
    utterance_cmvn,
)
from s2s.data.sampler import BucketBatchSampler
from s2s.data.tokenizer import Tokenizer, normalize_text, train_sentencepiece

# utt -> (seconds, transcript, translation)
UTTS = {
    "spk1-a": (0.30, "Hello, World!", "Hallo Welt"),
    "spk1-b": (0.55, "The cat sat.", "Die Katze sass"),
    "spk2-a": (0.42, "Don't stop the music", "Hör nicht auf"),
    "spk2-b": (0.25, "a dog", "ein Hund"),
}


def write_dir(root: Path, name: str, utts: dict[str, tuple[float, str, str]]) -> Path:
    rng = np.random.default_rng(0)
    wavs = {}
    for utt, (secs, _, _) in utts.items():
        wav = root / f"{utt}.wav"
        if not wav.exists():
            sf.write(wav, rng.uniform(-0.3, 0.3, int(16000 * secs)).astype(np.float32), 16000)
        wavs[utt] = str(wav)
    write_datadir(
        root / name,
        wavs,
        {"text": {u: v[1] for u, v in utts.items()}, "text.de": {u: v[2] for u, v in utts.items()}},
        {u: u.split("-")[0] for u in utts},
    )
    return root / name


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ds")
    data = write_dir(root, "train", UTTS)
    dump = dump_features(data, root / "dump")
    texts = [t for _, a, b in UTTS.values() for t in (a, b, normalize_text(a, "lc.rm"))]
    words = ["hello", "world", "the", "cat", "sat", "dog", "a", "music", "stop", "don't"]
    words += ["hallo", "welt", "die", "katze", "ein", "hund"]
    texts += [" ".join(words[(i * 7 + k) % len(words)] for k in range(6)) for i in range(60)]
    tok = train_sentencepiece(texts, root / "spm", vocab_size=80, model_type="bpe", num_threads=1)
    return {"root": root, "data": data, "dump": dump, "tok": tok}


def test_items_lengths_and_targets(env: dict) -> None:
    tok: Tokenizer = env["tok"]
    ds = SpeechDataset(env["dump"], env["data"], tok)
    reader = FeatureReader(env["dump"])
    assert ds.utt_ids == sorted(UTTS) and len(ds) == 4
    assert ds.lengths == [reader.num_frames(u) for u in ds.utt_ids]
    assert ds.lengths[ds.utt_ids.index("spk1-b")] == (int(0.55 * 16000) - 400) // 160 + 1
    for i, utt in enumerate(ds.utt_ids):
        u, feats, tgt = ds[i]
        assert u == utt
        assert feats.shape == (ds.lengths[i], 80) and feats.dtype == torch.float32
        torch.testing.assert_close(feats, utterance_cmvn(reader[utt]))
        assert tgt.dtype == torch.long
        assert tgt.tolist() == tok.encode(UTTS[utt][1])
        assert tok.bos_id not in tgt.tolist() and tok.eos_id not in tgt.tolist()


def test_lengths_do_not_read_features(env: dict, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    shutil.copytree(env["dump"], dump)
    for shard in dump.glob("feats.*.npy"):
        shard.unlink()
    ds = SpeechDataset(dump, env["data"], env["tok"])  # builds from the index alone
    assert ds.lengths == SpeechDataset(env["dump"], env["data"], env["tok"]).lengths
    with pytest.raises(FileNotFoundError, match=r"feats\.\d+\.npy: shard named in .* is missing"):
        ds[0]


def test_text_field_and_normalize(env: dict) -> None:
    tok: Tokenizer = env["tok"]
    de = SpeechDataset(env["dump"], env["data"], tok, text_field="text.de")
    assert de[0][2].tolist() == tok.encode("Hallo Welt")
    lc = SpeechDataset(env["dump"], str(env["data"]), tok, normalize="lc.rm")
    assert tok.decode(lc[0][2]) == "hello world"
    assert tok.decode(lc[ds_index(lc, "spk2-a")][2]) == "don't stop the music"
    with pytest.raises(ValueError, match=r"text\.fr: no such text file"):
        SpeechDataset(env["dump"], env["data"], tok, text_field="text.fr")


def ds_index(ds: SpeechDataset, utt: str) -> int:
    return ds.utt_ids.index(utt)


def test_global_cmvn_then_specaug(env: dict, tmp_path: Path) -> None:
    cmvn = GlobalCMVN.from_file(compute_cmvn_stats(env["dump"], tmp_path / "cmvn.json"))
    seen = []

    def specaug(feats: torch.Tensor) -> torch.Tensor:
        seen.append(feats.clone())
        return feats * 0 + 7.0

    ds = SpeechDataset(env["dump"], env["data"], env["tok"], cmvn=cmvn, specaug=specaug)
    _, feats, _ = ds[1]
    raw = FeatureReader(env["dump"])[ds.utt_ids[1]]
    torch.testing.assert_close(seen[0], cmvn(raw))  # specaug sees CMVN-normalised features
    assert torch.all(feats == 7.0)


def test_missing_features_name_utt_and_dump(env: dict) -> None:
    more = dict(UTTS, **{"spk3-x": (0.3, "extra words", "mehr")})
    data = write_dir(env["root"], "more", more)
    with pytest.raises(ValueError, match=r"'spk3-x'.*dump"):
        SpeechDataset(env["dump"], data, env["tok"])


@pytest.mark.parametrize(
    ("text", "normalize", "why"),
    [("?!...", "lc.rm", "empty target"), ("ЖЖЖ ЩЩ", "none", "all unknown")],
)
def test_bad_targets_name_utt_and_file(env: dict, text: str, normalize: str, why: str) -> None:
    bad = dict(UTTS)
    bad["spk2-a"] = (0.42, text, "x")
    data = write_dir(env["root"], f"bad_{normalize}", bad)
    with pytest.raises(ValueError, match=rf"bad_{normalize}/text: utterance 'spk2-a'.*{why}"):
        SpeechDataset(env["dump"], data, env["tok"], normalize=normalize)


def test_collate_pads_features_and_targets() -> None:
    items = [
        ("a", torch.ones(3, 2), torch.tensor([5, 6])),
        ("b", torch.full((5, 2), 2.0), torch.tensor([7, 8, 9, 10])),
        ("c", torch.full((1, 2), 3.0), torch.tensor([11])),
    ]
    b = collate(items)
    assert b.utt_ids == ["a", "b", "c"] and len(b) == 3
    assert b.src.shape == (3, 5, 2) and b.src.dtype == torch.float32
    assert b.src_lens.tolist() == [3, 5, 1] and b.src_lens.dtype == torch.long
    assert b.tgt.tolist() == [[5, 6, 0, 0], [7, 8, 9, 10], [11, 0, 0, 0]]
    assert b.tgt_lens.tolist() == [2, 4, 1] and b.tgt.dtype == torch.long
    assert torch.all(b.src[0, 3:] == 0) and torch.all(b.src[2, 1:] == 0)
    assert torch.all(b.src[1] == 2.0)


def test_collate_token_sources_and_errors() -> None:
    b = collate([("a", torch.tensor([4, 5, 6]), torch.tensor([7])), ("b", torch.tensor([8]),
                 torch.tensor([9, 10]))])  # fmt: skip
    assert b.src.tolist() == [[4, 5, 6], [8, 0, 0]] and b.src.dtype == torch.long
    assert b.src_lens.tolist() == [3, 1]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="mixed"):
        collate([("a", torch.ones(3, 2), torch.tensor([1])), ("b", torch.ones(3, 4),
                 torch.tensor([1]))])  # fmt: skip


def test_batch_to_moves_every_tensor() -> None:
    b = collate([("a", torch.ones(2, 3), torch.tensor([4, 5]))])
    m = b.to("meta")
    assert isinstance(m, Batch) and m.utt_ids == ["a"]
    assert all(t.device.type == "meta" for t in (m.src, m.src_lens, m.tgt, m.tgt_lens))
    assert b.src.device.type == "cpu"  # the original is untouched


def test_source_transcript_for_the_source_ctc(env: dict, tmp_path: Path) -> None:
    """src_text_field: every item also carries the source transcript's ids, and the batch pads
    them; a missing file or an empty transcript names the file and the utterance."""
    tok: Tokenizer = env["tok"]
    ds = SpeechDataset(env["dump"], env["data"], tok, text_field="text.de", src_text_field="text")
    for i, utt in enumerate(ds.utt_ids):
        u, _, tgt, src_text = ds[i]
        assert tgt.tolist() == tok.encode(UTTS[utt][2])
        assert src_text.tolist() == tok.encode(UTTS[utt][1]) and src_text.dtype == torch.long
    b = collate([ds[i] for i in range(len(ds))])
    assert b.src_text_lens.tolist() == [len(tok.encode(UTTS[u][1])) for u in ds.utt_ids]
    for row, n, u in zip(b.src_text, b.src_text_lens, ds.utt_ids):
        assert row[:n].tolist() == tok.encode(UTTS[u][1]) and not row[n:].any()
    moved = b.to("meta")
    assert moved.src_text.device.type == "meta" and moved.src_text_lens.device.type == "meta"
    plain = SpeechDataset(env["dump"], env["data"], tok, text_field="text.de")
    assert len(plain[0]) == 3 and collate([plain[0]]).src_text is None
    with pytest.raises(ValueError, match="items with and without a source transcript"):
        collate([ds[0], plain[1]])
    with pytest.raises(ValueError, match=r"text\.en: no such text file \(have: text, text\.de\)"):
        SpeechDataset(env["dump"], env["data"], tok, text_field="text.de", src_text_field="text.en")
    bad = {**UTTS, "spk2-b": (0.25, "...", "ein Hund")}
    data = write_dir(env["root"], "bad_src", bad)
    with pytest.raises(ValueError, match=r"bad_src/text: utterance 'spk2-b' has an empty target"):
        SpeechDataset(env["dump"], data, tok, "text.de", normalize="lc.rm", src_text_field="text")


def test_text_pair_dataset(env: dict) -> None:
    tok: Tokenizer = env["tok"]
    src = {"u2": "the cat sat on the dog", "u1": "hello world"}
    tgt = {"u1": "Hallo Welt!", "u2": "die Katze"}
    ds = TextPairDataset(src, tgt, tok)
    assert ds.utt_ids == ["u1", "u2"]
    assert ds.lengths == [len(tok.encode(src["u1"])), len(tok.encode(src["u2"]))]
    u, s, t = ds[1]
    assert u == "u2" and s.tolist() == tok.encode(src["u2"]) and t.tolist() == tok.encode(tgt[u])
    short = TextPairDataset(src, tgt, tok, max_src_len=2, normalize="lc.rm")
    assert short.lengths == [2, 2] and short[1][1].tolist() == tok.encode(src["u2"])[:2]
    assert tok.decode(short[0][2]) == "hallo welt"
    with pytest.raises(ValueError, match="'u3'.*no target"):
        TextPairDataset({**src, "u3": "a dog"}, tgt, tok)
    with pytest.raises(ValueError, match="'u0'.*no source"):
        TextPairDataset(src, {**tgt, "u0": "a dog"}, tok)
    with pytest.raises(ValueError, match="'u1': empty source"):
        TextPairDataset({**src, "u1": " "}, tgt, tok)
    with pytest.raises(ValueError, match="'u2'.*empty target"):
        TextPairDataset(src, {**tgt, "u2": "..."}, tok, normalize="lc.rm")


def test_loader_with_bucket_sampler(env: dict) -> None:
    ds = SpeechDataset(env["dump"], env["data"], env["tok"])
    sampler = BucketBatchSampler(ds.lengths, max_frames=120, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=1)
    seen = []
    for batch in loader:
        assert batch.src.shape[0] * batch.src.shape[1] <= 120 or len(batch) == 1
        assert batch.src_lens.tolist() == [ds.lengths[ds.utt_ids.index(u)] for u in batch.utt_ids]
        seen += batch.utt_ids
    assert sorted(seen) == ds.utt_ids


def test_an_empty_text_field_is_no_such_file(env: dict) -> None:
    with pytest.raises(ValueError, match=r"train: no such text file \(have: text, text\.de\)"):
        SpeechDataset(env["dump"], env["data"], env["tok"], text_field="")


@given(st.lists(st.lists(st.integers(0, 2**31 - 1), max_size=6), max_size=8))
def test_ragged_ids_give_back_each_sequence(seqs: list[list[int]]) -> None:
    from s2s.data.dataset import RaggedIds

    ids = RaggedIds(iter(seqs))  # one pass over a generator, as the dataset builds it
    assert len(ids) == len(seqs)
    for i, seq in enumerate(seqs):
        assert ids[i].dtype == torch.long and ids[i].tolist() == seq and ids.length(i) == len(seq)
    if seqs:
        assert ids[-1].tolist() == seqs[-1]
    with pytest.raises(IndexError):
        ids[len(seqs)]
