"""Corpus preparers on miniature copies of each corpus's published layout (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s2s.corpora import librispeech, must_c
from s2s.data.audio import load_utterance
from s2s.data.datadir import load_datadir

SR = 16000


def write_audio(path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """A short noise file (wav or flac by suffix); returns the samples as written (PCM_16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.uniform(-0.5, 0.5, int(SR * seconds)).astype(np.float32)
    sf.write(path, data, SR, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


def write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# ----------------------------------------------------------------------------- MuST-C

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


def test_must_c_layout_to_datadirs(tmp_path: Path) -> None:
    src = make_mustc(tmp_path / "src")
    sets = must_c.prepare(src, tmp_path / "data")
    assert sorted(sets) == sorted(MUSTC_SEGS)
    dd = load_datadir(tmp_path / "data" / "train", validate=True, check_audio=True)
    assert dd.utt_ids == [
        "ted_00001_0000250_0001250",
        "ted_00001_0001500_0002250",
        "ted_00012_0000000_0001235",
    ]
    assert dd.segments is not None
    assert dd.segments["ted_00001_0001500_0002250"] == ("ted_00001", 1.5, 2.25)
    assert dd.segments["ted_00012_0000000_0001235"] == ("ted_00012", 0.0, 1.235)
    assert dd.wav_scp["ted_00012"] == str((src / "en-de/data/train/wav/ted_12.wav").resolve())
    assert dd.text("ted_00001_0000250_0001250", "text.de") == "Hallo zusammen."
    assert dd.text("ted_00001_0000250_0001250", "text.en") == "Hello there."
    assert dd.texts["text"] == dd.texts["text.en"]
    assert dd.utt2spk["ted_00001_0001500_0002250"] == "ted_00001"
    assert sorted(dd.texts) == ["text", "text.de", "text.en"]
    # The segment reads the right samples of the talk.
    full = sf.read(src / "en-de/data/train/wav/ted_1.wav", dtype="float32")[0]
    wave = load_utterance(dd, "ted_00001_0001500_0002250").numpy()
    assert np.array_equal(wave, full[int(1.5 * SR) : int(2.25 * SR)])
    tst = load_datadir(tmp_path / "data" / "tst-COMMON")
    assert tst.utt_ids == ["ted_01096_0000100_0000600"]


def test_must_c_generic_yaml_layout(tmp_path: Path) -> None:
    """A block-style yaml (not one mapping a line) goes through PyYAML with the same result."""
    src = make_mustc(tmp_path / "src")
    txt = src / "en-de/data/dev/txt"
    (txt / "dev.yaml").write_text(
        "- duration: 1.0\n  offset: 0.5\n  speaker_id: spk.767\n  wav: ted_767.wav\n"
    )
    dd = must_c.prepare(src, tmp_path / "data", splits=["dev"])["dev"]
    assert dd.utt_ids == ["ted_00767_0000500_0001500"]


def test_must_c_bad_inputs(tmp_path: Path) -> None:
    src = make_mustc(tmp_path / "src")
    txt = src / "en-de/data/train/txt"
    # empty translation line -> file:line
    de = txt / "train.de"
    good_de = de.read_text()
    de.write_text("Hallo zusammen.\n\nZweiter Vortrag.\n")
    with pytest.raises(ValueError, match=r"train\.de:2: empty text"):
        must_c.prepare(src, tmp_path / "d1", splits=["train"])
    # yaml and text not line-aligned
    de.write_text("Hallo zusammen.\nDanke.\n")
    with pytest.raises(ValueError, match=r"train\.de: 2 lines but .*3 segments"):
        must_c.prepare(src, tmp_path / "d2", splits=["train"])
    de.write_text(good_de)
    # missing wav -> utterance and path
    (src / "en-de/data/train/wav/ted_12.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"ted_00012_0000000_0001235.*ted_12\.wav"):
        must_c.prepare(src, tmp_path / "d3", splits=["train"])
    # missing split file
    (src / "en-de/data/dev/txt/dev.en").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev\.en: English transcripts not found"):
        must_c.prepare(src, tmp_path / "d4", splits=["dev"])
    # malformed yaml entry
    (txt / "train.yaml").write_text("- {offset: 1.0, wav: ted_1.wav}\n" * 3)
    with pytest.raises(ValueError, match=r"train\.yaml:1: segment lacks duration"):
        must_c.prepare(src, tmp_path / "d5", splits=["train"])


# ----------------------------------------------------------------------------- LibriSpeech

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


def test_librispeech_layout_to_datadirs(tmp_path: Path) -> None:
    src = make_librispeech(tmp_path / "src")
    sets = librispeech.prepare(src, tmp_path / "data")
    assert sorted(sets) == ["dev_clean", "test_clean"]
    dd = load_datadir(tmp_path / "data" / "test_clean", validate=True, check_audio=True)
    assert dd.utt_ids == ["1089-134686-0000", "121-121726-0000", "121-121726-0001"]
    assert dd.text("121-121726-0001") == "A SECOND LINE"
    assert dd.utt2spk["121-121726-0001"] == "121-121726"
    assert dd.segments is None and list(dd.texts) == ["text"]
    flac = src / "LibriSpeech/test-clean/121/121726/121-121726-0001.flac"
    assert dd.wav_scp["121-121726-0001"] == str(flac.resolve())
    assert load_utterance(dd, "121-121726-0001").numel() == int(0.4 * SR)
    only = librispeech.prepare(src, tmp_path / "d2", subsets=["dev-clean"])
    assert list(only) == ["dev_clean"] and len(only["dev_clean"]) == 2


def test_librispeech_bad_inputs(tmp_path: Path) -> None:
    src = make_librispeech(tmp_path / "src")
    trans = src / "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt"
    trans.write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001\n")
    with pytest.raises(ValueError, match=r"84-121123\.trans\.txt:2: empty transcript"):
        librispeech.prepare(src, tmp_path / "d1", subsets=["dev-clean"])
    trans.write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0007 MISSING AUDIO\n")
    with pytest.raises(FileNotFoundError, match=r"84-121123-0007.*84-121123-0007\.flac"):
        librispeech.prepare(src, tmp_path / "d2", subsets=["dev-clean"])
    with pytest.raises(FileNotFoundError, match=r"dev-other: LibriSpeech subset directory"):
        librispeech.prepare(src, tmp_path / "d3", subsets=["dev-other"])
    with pytest.raises(FileNotFoundError, match="LibriSpeech directory not found"):
        librispeech.prepare(tmp_path / "nowhere", tmp_path / "d4")
