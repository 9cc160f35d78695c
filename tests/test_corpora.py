"""Corpus preparers on miniature copies of each corpus's published layout (no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import (
    AMI_ROWS,
    LIBRI,
    MUSTC_SEGS,
    SLURP_PROMPTS,
    SR,
    XSUM,
    local_module,
    make_ami,
    make_librispeech,
    make_mustc,
    make_slurp,
    make_xsum,
    write_text,
)

from s2s.data.audio import load_utterance
from s2s.data.datadir import load_datadir

ami, librispeech, must_c, slurp, xsum = (
    local_module(n) for n in ("ami", "librispeech", "must_c", "slurp", "xsum")
)

# ----------------------------------------------------------------------------- MuST-C


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


def test_librispeech_download_from_a_mirror(tmp_path: Path) -> None:
    """Stage 0's download, from a file:// mirror holding the published archives."""
    import tarfile

    src = make_librispeech(tmp_path / "src")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for subset in LIBRI:
        with tarfile.open(mirror / f"{subset}.tar.gz", "w:gz") as tar:
            tar.add(src / "LibriSpeech" / subset, arcname=f"LibriSpeech/{subset}")
    root = tmp_path / "downloads"
    subsets = list(LIBRI)
    librispeech.download(root, subsets, base_url=mirror.as_uri())
    assert sorted(librispeech.prepare(root, tmp_path / "data")) == ["dev_clean", "test_clean"]
    (mirror / f"{subsets[0]}.tar.gz").unlink()
    librispeech.download(root, subsets, base_url=mirror.as_uri())  # unpacked: nothing fetched
    with pytest.raises(ValueError, match="unknown LibriSpeech subset"):
        librispeech.download(root, ["train-clean-7"], base_url=mirror.as_uri())


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


# ----------------------------------------------------------------------------- AMI


def test_ami_layout_to_datadirs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_ami(tmp_path / "src")
    with caplog.at_level(logging.WARNING):
        sets = ami.prepare(src, tmp_path / "data")
    assert "1 exact duplicate" in caplog.text
    assert sorted(sets) == ["dev", "eval", "train"]
    dev = load_datadir(tmp_path / "data" / "dev", validate=True, check_audio=True)
    assert dev.utt_ids == [
        "AMI_ES2011a_H00_FEE041_0003415_0003484",
        "AMI_ES2011a_H01_MEE042_0000100_0000250",
    ]
    assert dev.segments is not None
    assert dev.segments["AMI_ES2011a_H00_FEE041_0003415_0003484"] == (
        "AMI_ES2011a_H00",
        34.15,
        34.84,
    )
    assert dev.utt2spk["AMI_ES2011a_H01_MEE042_0000100_0000250"] == "AMI_ES2011a_H01_MEE042"
    assert dev.text("AMI_ES2011a_H01_MEE042_0000100_0000250") == "HELLO EVERYONE"
    wav = src / "amicorpus/ES2011a/audio/ES2011a.Headset-1.wav"
    assert dev.wav_scp["AMI_ES2011a_H01"] == str(wav.resolve())
    full = sf.read(wav, dtype="float32")[0]
    seg = load_utterance(dev, "AMI_ES2011a_H01_MEE042_0000100_0000250").numpy()
    assert np.array_equal(seg, full[SR : int(2.5 * SR)])
    ev = load_datadir(tmp_path / "data" / "eval")
    assert ev.utt_ids == ["AMI_EN2002a_H02_FEO070_0000050_0000125"]
    train = load_datadir(tmp_path / "data" / "train")
    assert len(train) == 2 and list(train.wav_scp) == ["AMI_ES2002a_H03"]
    assert ami.set_of("IS1009c") == "eval" and ami.set_of("IB4010") == "dev"


def test_ami_bad_inputs(tmp_path: Path) -> None:
    src = make_ami(tmp_path / "src")
    table = src / "annotations" / "transcripts2"
    write_text(table, [*AMI_ROWS[:3], "EN2002a H02 FEO070 0.5 1.25"])
    with pytest.raises(ValueError, match=r"transcripts2:4: .*empty transcript"):
        ami.prepare(src, tmp_path / "d1")
    write_text(table, [*AMI_ROWS[:2], "ES2011a H00 FEE041 34.15 34.84 OKAY NOT"])
    with pytest.raises(ValueError, match=r"transcripts2:3: .*repeats line 1 with different"):
        ami.prepare(src, tmp_path / "d2")
    write_text(table, AMI_ROWS)
    (src / "amicorpus/EN2002a/audio/EN2002a.Headset-2.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"AMI_EN2002a_H02_FEO070_0000050.*Headset-2\.wav"):
        ami.prepare(src, tmp_path / "d3")
    dd = ami.prepare(src, tmp_path / "d4", sets=["dev"])  # eval audio is not needed for dev
    assert list(dd) == ["dev"]
    table.unlink()
    with pytest.raises(FileNotFoundError, match=r"transcripts2: AMI segment table not found"):
        ami.prepare(src, tmp_path / "d5")


# ----------------------------------------------------------------------------- SLURP


def test_slurp_layout_to_datadirs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_slurp(tmp_path / "src")
    with caplog.at_level(logging.WARNING):
        sets = slurp.prepare(src, tmp_path / "data")
    assert "skipped 1 recordings" in caplog.text
    assert sorted(sets) == ["devel", "test", "train"]
    train = load_datadir(tmp_path / "data" / "train", validate=True, check_audio=True)
    assert train.utt_ids == [
        "slurp_MO-433-1434542201",
        "slurp_MO-433-1434542201-headset",
        "slurp_MO-4330-1490000000",
    ]
    utt = "slurp_MO-433-1434542201-headset"
    assert train.utt2spk[utt] == "slurp_MO-433"
    assert train.text(utt) == "wake me up at five am"
    assert train.text(utt, "text.intent") == "alarm_set"
    assert train.text(utt, "text.slu") == "alarm_set wake me up at five am"
    flac = src / "audio/slurp_real/audio-1434542201-headset.flac"
    assert train.wav_scp[utt] == str(flac.resolve())
    devel = load_datadir(tmp_path / "data" / "devel")
    assert devel.utt_ids == ["slurp_UNK-326-1500000000-headset"]
    # Asking for devel alone still leaves the recording shared with train out of devel.
    only = slurp.prepare(src, tmp_path / "d2", sets=["devel"])
    assert only["devel"].utt_ids == devel.utt_ids
    # Without metadata.json every utterance is its own speaker.
    bare = make_slurp(tmp_path / "bare", metadata=False)
    test = slurp.prepare(bare, tmp_path / "d3", sets=["test"])["test"]
    assert test.utt2spk == {"slurp-1600000000": "slurp-1600000000"}


def test_slurp_bad_inputs(tmp_path: Path) -> None:
    src = make_slurp(tmp_path / "src")
    test_jsonl = src / "dataset/slurp/test.jsonl"
    bad = dict(SLURP_PROMPTS["test"][0], sentence="  ")
    write_text(test_jsonl, [json.dumps(SLURP_PROMPTS["test"][0]), json.dumps(bad)])
    with pytest.raises(ValueError, match=r"test\.jsonl:2: empty sentence"):
        slurp.prepare(src, tmp_path / "d1", sets=["test"])
    write_text(test_jsonl, ["{not json"])
    with pytest.raises(ValueError, match=r"test\.jsonl:1: not valid JSON"):
        slurp.prepare(src, tmp_path / "d2", sets=["test"])
    write_text(test_jsonl, [json.dumps(p) for p in SLURP_PROMPTS["test"]])
    (src / "audio/slurp_real/audio-1600000000.flac").unlink()
    with pytest.raises(FileNotFoundError, match=r"slurp_FO-232-1600000000.*1600000000\.flac"):
        slurp.prepare(src, tmp_path / "d3", sets=["test"])
    (src / "dataset/slurp/devel.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"devel\.jsonl: SLURP prompt file not found"):
        slurp.prepare(src, tmp_path / "d4", sets=["devel"])


# ----------------------------------------------------------------------------- XSum


def test_xsum_jsonl_layout(tmp_path: Path) -> None:
    src = make_xsum(tmp_path / "src")
    sets = xsum.prepare(src, tmp_path / "data")
    assert sorted(sets) == ["test", "train", "validation"]
    dd = load_datadir(tmp_path / "data" / "train", validate=True)
    assert dd.text_only and dd.utt_ids == ["29750031", "38264402"]
    assert dd.text("38264402", "text.src") == "A fire alarm went off. People left."
    assert dd.text("29750031", "text.tgt") == "Clean-up operations are continuing."
    assert dd.texts["text"] == dd.texts["text.tgt"]
    assert dd.utt2spk["29750031"] == "29750031"
    assert not (tmp_path / "data" / "train" / "wav.scp").exists()


def write_summary_file(path: Path, doc: str, summary: str) -> None:
    body = doc.replace("\n\n", "\nShare this with\nEmail\n")  # boilerplate to drop
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[SN]URL[SN]\nhttp://www.bbc.co.uk/news/x\n\n[SN]TITLE[SN]\nA title\n\n"
        f"[SN]FIRST-SENTENCE[SN]\n{summary}\n\n[SN]RESTBODY[SN]\n{body}\n",
        encoding="utf-8",
    )


def make_xsum_original(root: Path) -> Path:
    split = {name: [i for i, _, _ in rows] for name, rows in XSUM.items()}
    root.mkdir(parents=True, exist_ok=True)
    (root / xsum.SPLIT_FILE).write_text(json.dumps(split))
    for rows in XSUM.values():
        for i, d, s in rows:
            write_summary_file(root / "bbc-summary-data" / f"{i}.summary", d, s)
    return root


def test_xsum_original_layout(tmp_path: Path) -> None:
    src = make_xsum_original(tmp_path / "src")
    sets = xsum.prepare(src, tmp_path / "data")
    train = load_datadir(tmp_path / "data" / "train", validate=True)
    assert train.text("38264402", "text.src") == "A fire alarm went off. People left."
    assert train.text("38264402") == "A fire alarm sounded."
    assert sets["validation"].utt_ids == ["11154244"]
    assert sets["test"].text("38295789", "text.src") == "Prison governors spoke."


def test_xsum_bad_inputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "jsonl"
    rows = [
        json.dumps({"document": "A text.", "summary": "S.", "id": "1"}),
        json.dumps({"document": " \n ", "summary": "S.", "id": "2"}),
    ]
    write_text(src / "test.jsonl", rows)
    with pytest.raises(ValueError, match=r"test\.jsonl:2: empty document of article 2"):
        xsum.prepare(src, tmp_path / "d1", sets=["test"])
    with caplog.at_level(logging.WARNING):
        dd = xsum.prepare(src, tmp_path / "d2", sets=["test"], skip_empty=True)["test"]
    assert dd.utt_ids == ["1"] and "skipped 1 articles" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl: XSum split file not found"):
        xsum.prepare(src, tmp_path / "d3", sets=["train"])
    orig = make_xsum_original(tmp_path / "orig")
    (orig / "bbc-summary-data" / "11154244.summary").unlink()
    with pytest.raises(FileNotFoundError, match=r"article 11154244 .*11154244\.summary"):
        xsum.prepare(orig, tmp_path / "d4", sets=["validation", "test"])
    (orig / "bbc-summary-data" / "38295789.summary").write_text("[SN]URL[SN]\nx\n")
    with pytest.raises(ValueError, match=r"38295789\.summary: no \[SN\]FIRST-SENTENCE"):
        xsum.prepare(orig, tmp_path / "d5", sets=["test"])
    with pytest.raises(FileNotFoundError, match="no XSum found"):
        xsum.prepare(tmp_path / "empty", tmp_path / "d6")
