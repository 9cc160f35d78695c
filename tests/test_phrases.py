"""Spoken-phrases corpus: grammar agreement against hand-written German, sampling, TTS, prepare."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from helpers import local_module

from s2s.data.audio import load_utterance
from s2s.data.datadir import load_datadir
from s2s.synth import tts

g = local_module("phrases.grammar")
Det, noun_phrase, place_phrase = g.Det, g.noun_phrase, g.place_phrase
_prepare = local_module("phrases.prepare")
TEST_VOICES, prepare, speaker_id = _prepare.TEST_VOICES, _prepare.prepare, _prepare.speaker_id

N = {n.en: n for n in g.NOUNS}
P = {p.noun.en: p.noun for p in g.PLACES}
A = {a.en: a for a in g.ADJECTIVES}
V = {v.en: v for v in g.VERBS}
I, YOU, WE = g.PRONOUNS[0], g.PRONOUNS[1], g.PRONOUNS[4]


def phrase(det: Det, noun: str, adjs: str = "", plural: bool = False, case: str = "nom"):
    return noun_phrase(det, N[noun], tuple(A[a] for a in adjs.split()), plural, case)


def subj(det: Det, noun: str, adjs: str = "", plural: bool = False):
    return g.noun_subject(phrase(det, noun, adjs, plural, "nom"), plural)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "n,en,de",
    [
        (0, "zero", "null"),
        (1, "one", "eins"),
        (16, "sixteen", "sechzehn"),
        (17, "seventeen", "siebzehn"),
        (21, "twenty-one", "einundzwanzig"),
        (30, "thirty", "dreißig"),
        (66, "sixty-six", "sechsundsechzig"),
        (71, "seventy-one", "einundsiebzig"),
        (99, "ninety-nine", "neunundneunzig"),
    ],
)
def test_numbers(n: int, en: str, de: str) -> None:
    assert g.en_number(n) == en
    assert g.de_number(n) == de


def test_numbers_out_of_range() -> None:
    with pytest.raises(ValueError, match="0..99"):
        g.de_number(100)
    with pytest.raises(ValueError, match="0..99"):
        g.en_number(-1)


# --------------------------------------------------------------------------- noun phrases


@pytest.mark.parametrize(
    "det,noun,adjs,plural,case,en,de",
    [
        (Det("the"), "ball", "red", False, "nom", "the red ball", "der rote Ball"),
        (Det("the"), "ball", "red", False, "acc", "the red ball", "den roten Ball"),
        (Det("the"), "cup", "red", False, "acc", "the red cup", "die rote Tasse"),
        (Det("the"), "book", "red", False, "acc", "the red book", "das rote Buch"),
        (Det("a"), "ball", "red", False, "nom", "a red ball", "ein roter Ball"),
        (Det("a"), "apple", "old", False, "acc", "an old apple", "einen alten Apfel"),
        (Det("a"), "book", "new", False, "acc", "a new book", "ein neues Buch"),
        (Det("a"), "cup", "", False, "acc", "a cup", "eine Tasse"),
        (Det("num", 1), "dog", "", False, "acc", "one dog", "einen Hund"),
        (Det("no"), "cup", "red", True, "acc", "no red cups", "keine roten Tassen"),
        (Det("this"), "dog", "small", True, "nom", "these small dogs", "diese kleinen Hunde"),
        (
            Det("num", 21),
            "bird",
            "green",
            True,
            "acc",
            "twenty-one green birds",
            "einundzwanzig grüne Vögel",
        ),
        (
            Det("poss", None, ("our", "unser")),
            "football",
            "new",
            False,
            "acc",
            "our new football",
            "unseren neuen Fußball",
        ),
        (
            Det("poss", 2, ("my", "mein")),
            "cat",
            "black",
            True,
            "nom",
            "my two black cats",
            "meine zwei schwarzen Katzen",
        ),
        (
            Det("many"),
            "coffee cup",
            "big blue",
            True,
            "nom",
            "many big blue coffee cups",
            "viele große blaue Kaffeetassen",
        ),
    ],
)
def test_noun_phrase_agreement(det, noun, adjs, plural, case, en, de) -> None:
    assert phrase(det, noun, adjs, plural, case) == (en, de)


def test_noun_phrase_rejects_disagreement() -> None:
    with pytest.raises(ValueError, match="agree"):
        phrase(Det("a"), "dog", plural=True)
    with pytest.raises(ValueError, match="case"):
        phrase(Det("the"), "dog", case="gen")


@pytest.mark.parametrize(
    "prep,noun,adj,en,de",
    [
        ("on", "table", "big", "on the big table", "auf dem großen Tisch"),
        ("in", "garden", "", "in the garden", "im Garten"),
        ("in", "box", "small", "in the small box", "in der kleinen Kiste"),
        ("in", "house", "small", "in the small house", "im kleinen Haus"),
        ("next to", "door", "old", "next to the old door", "neben der alten Tür"),
    ],
)
def test_place_dative(prep: str, noun: str, adj: str, en: str, de: str) -> None:
    assert place_phrase(prep, P[noun], (A[adj],) if adj else ()) == (en, de)


# --------------------------------------------------------------------------- sentences


def _pair(p: g.Pair) -> tuple[str, str]:
    return p.en, p.de


def test_sentences_hand_checked() -> None:
    cases = [
        (
            g.render_transitive(I, V["see"], phrase(Det("num", 21), "bird", "green", True, "acc")),
            ("I see twenty-one green birds", "Ich sehe einundzwanzig grüne Vögel."),
        ),
        (
            g.render_locative(
                subj(Det("the", 3), "cup", "red", True), place_phrase("on", P["table"])
            ),
            ("the three red cups are on the table", "Die drei roten Tassen sind auf dem Tisch."),
        ),
        (
            g.render_where(subj(Det("the"), "dog", "small")),
            ("where is the small dog", "Wo ist der kleine Hund?"),
        ),
        (  # verb second after a fronted adverb; English "will" only
            g.render_transitive(
                WE,
                V["buy"],
                phrase(Det("a"), "car", "new", case="acc"),
                adverb=("tomorrow", "morgen"),
            ),
            ("tomorrow we will buy a new car", "Morgen kaufen wir ein neues Auto."),
        ),
        (
            g.render_transitive(
                ("Anna", "Anna", "3sg"),
                V["see"],
                phrase(Det("the"), "man", case="acc"),
                place=place_phrase("in", P["kitchen"]),
                adverb=("today", "heute"),
            ),
            ("today Anna sees the man in the kitchen", "Heute sieht Anna den Mann in der Küche."),
        ),
        (
            g.render_there(subj(Det("a"), "ball", "red"), place_phrase("under", P["bed"])),
            ("there is a red ball under the bed", "Unter dem Bett ist ein roter Ball."),
        ),
        (
            g.render_there(subj(Det("num", 21), "bird", "", True), place_phrase("in", P["tree"])),
            ("there are twenty-one birds in the tree", "Im Baum sind einundzwanzig Vögel."),
        ),
        (
            g.render_question(
                subj(Det("the"), "dog", "small"),
                V["see"],
                phrase(Det("poss", None, ("my", "mein")), "cat", "white", case="acc"),
            ),
            ("does the small dog see my white cat", "Sieht der kleine Hund meine weiße Katze?"),
        ),
        (
            g.render_how_many(YOU, V["have"], N["cup"], (A["red"],)),
            ("how many red cups do you have", "Wie viele rote Tassen hast du?"),
        ),
        (
            g.render_predicative(subj(Det("the"), "cup"), A["red"], question=True),
            ("is the cup red", "Ist die Tasse rot?"),
        ),
        (
            g.render_colour(subj(Det("the"), "book", plural=True)),
            ("what colour are the books", "Welche Farbe haben die Bücher?"),
        ),
        (
            g.render_age(("Tom", "Tom", "3sg"), 1),
            ("Tom is one year old", "Tom ist ein Jahr alt."),
        ),
        (
            g.render_age(g.PRONOUNS[3], 99),
            ("she is ninety-nine years old", "Sie ist neunundneunzig Jahre alt."),
        ),
        (
            g.render_arithmetic(1, "plus", 20),
            ("one plus twenty is twenty-one", "Eins plus zwanzig ist einundzwanzig."),
        ),
        (
            g.render_transitive(
                g.PRONOUNS[5], V["have"], phrase(Det("no"), "dog", "", False, "acc")
            ),
            ("they have no dog", "Sie haben keinen Hund."),
        ),
    ]
    for got, want in cases:
        assert _pair(got) == want


# --------------------------------------------------------------------------- sampling


def test_generate_pairs_unique_deterministic_and_exclusive() -> None:
    a = g.generate_pairs(3000, seed=1)
    assert a == g.generate_pairs(3000, seed=1)
    assert a != g.generate_pairs(3000, seed=2)
    assert len({p.en for p in a}) == 3000
    assert {p.kind for p in a} == set(g.KINDS)
    b = g.generate_pairs(500, seed=1, exclude=[p.en for p in a])
    assert not {p.en for p in a} & {p.en for p in b}
    # German is a function of English (a second translation would raise inside), punctuated
    assert all(p.de[0].isupper() and p.de[-1] in ".?" for p in a)
    assert all(p.en == p.en.strip() and "  " not in p.en and p.en[-1].isalpha() for p in a)


def test_vocabulary_is_small_but_varied() -> None:
    pairs = g.generate_pairs(5000, seed=0)
    en = {w for p in pairs for w in p.en.split()}
    de = {w.strip(".?").lower() for p in pairs for w in p.de.split()}
    assert 150 < len(en) < 400
    assert 150 < len(de) < 600


def test_generate_pairs_reports_exhaustion_and_bad_kind() -> None:
    with pytest.raises(ValueError, match="distinct sentences"):
        g.generate_pairs(8000, seed=0, kinds=["colour"], max_tries_per_pair=1)
    with pytest.raises(ValueError, match="unknown sentence kind"):
        g.generate_pairs(3, kinds=["poem"])


# --------------------------------------------------------------------------- TTS

SENTENCE = "there are twenty-one green birds under the big table"


def test_tts_speech_at_16k_grows_with_text() -> None:
    short = tts.synthesize("hello", "en-us")
    long = tts.synthesize(SENTENCE, "en-us")
    native, sr = tts.synthesize_native(SENTENCE, "en-us")
    assert sr == 22050 and native.dtype == np.int16
    assert long.dtype == torch.float32 and long.dim() == 1
    assert abs(len(long) - len(native) * 16000 / 22050) <= 2  # resampled to 16 kHz
    assert long.pow(2).mean().sqrt() > 0.01 and long.abs().max() <= 1.0
    assert 0.3 < len(short) / 16000 < 1.5
    assert len(long) > 2.5 * len(short)
    assert len(tts.synthesize(SENTENCE, "en-us", rate=120)) > 1.3 * len(long)  # slower speech


def test_tts_deterministic_and_voices_differ() -> None:
    a = tts.synthesize(SENTENCE, "en-us", seed=1)
    female = tts.synthesize(SENTENCE, "en+f3", seed=1)  # in between: no state may leak
    assert torch.equal(a, tts.synthesize(SENTENCE, "en-us", seed=1))
    f0 = [AF.detect_pitch_frequency(w, 16000).median().item() for w in (a, female)]
    assert f0[1] > 1.5 * f0[0], f0
    scottish = tts.synthesize(SENTENCE, "en-gb-scotland", seed=1)
    assert len(scottish) != len(a) or not torch.allclose(scottish, a, atol=1e-2)


def test_tts_noise_at_requested_snr() -> None:
    clean = tts.synthesize(SENTENCE, "en-us", seed=3)
    noisy = tts.synthesize(SENTENCE, "en-us", snr_db=10.0, seed=3)
    noise = noisy - clean
    snr = 10 * torch.log10(clean.pow(2).mean() / noise.pow(2).mean())
    assert abs(snr.item() - 10.0) < 0.5
    assert torch.equal(noisy, tts.synthesize(SENTENCE, "en-us", snr_db=10.0, seed=3))
    assert not torch.equal(noisy, tts.synthesize(SENTENCE, "en-us", snr_db=10.0, seed=4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"voice": "xx-nope"}, "no voice"),
        ({"voice": "en+nope"}, "no variant"),
        ({"rate": 10}, "rate"),
        ({"text": "  "}, "nothing to say"),
    ],
)
def test_tts_errors(kwargs: dict, match: str) -> None:
    args = {"text": "hello", **kwargs}
    with pytest.raises(tts.TTSError, match=match):
        tts.synthesize(**args)


# --------------------------------------------------------------------------- prepare


def test_prepare_tiny_corpus(tmp_path) -> None:
    sets = prepare(tmp_path / "a", n_train=12, n_dev=4, n_test=4, seed=0, nj=2)
    assert set(sets) == {"train", "dev", "test"}
    sentences = {}
    for name, n in (("train", 12), ("dev", 4), ("test", 4)):
        dd = load_datadir(tmp_path / "a" / name, check_audio=True)
        assert len(dd) == n and set(dd.texts) == {"text", "text.en", "text.de"}
        for utt in dd.utt_ids:
            assert utt.startswith(dd.utt2spk[utt] + "-")
            assert dd.text(utt) == dd.text(utt, "text.en")
            info = sf.info(dd.wav_scp[utt])
            assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.channels == 1
            wave = load_utterance(dd, utt)
            assert wave.abs().max() > 0.04  # the quietest level: -26 dBFS peak
        sentences[name] = set(dd.texts["text"].values())
        assert len(sentences[name]) == n
    assert not sentences["train"] & sentences["dev"]
    assert not (sentences["train"] | sentences["dev"]) & sentences["test"]
    train_spk = set(sets["train"].utt2spk.values()) | set(sets["dev"].utt2spk.values())
    test_spk = set(sets["test"].utt2spk.values())
    assert test_spk and not train_spk & test_spk
    assert test_spk <= {speaker_id(v) for v in TEST_VOICES}

    # Same arguments, other nj: byte-identical audio and data dirs.
    prepare(tmp_path / "b", n_train=12, n_dev=4, n_test=4, seed=0, nj=1)
    for name in ("train", "test"):
        for utt in sets[name].utt_ids:
            a = (tmp_path / "a" / "wav" / name / f"{utt}.wav").read_bytes()
            assert a == (tmp_path / "b" / "wav" / name / f"{utt}.wav").read_bytes()
        assert (tmp_path / "a" / name / "text.de").read_text() == (
            tmp_path / "b" / name / "text.de"
        ).read_text()


def test_plan_set_scenes_in_their_ranges(tmp_path) -> None:
    """Every utterance's recording conditions (pauses, level, noise, room) are drawn in the
    documented ranges, all kinds occur, babble talkers are other utterances of the set, and a
    file is exactly its pauses plus the clean speech long."""
    pairs = g.generate_pairs(300, seed=0)
    utts = _prepare.plan_set("train", pairs, _prepare.TRAIN_VOICES, 0, tmp_path)
    assert utts == _prepare.plan_set("train", pairs, _prepare.TRAIN_VOICES, 0, tmp_path)
    lo, hi = _prepare.PAUSE_RANGE_S
    for u in utts:
        s = u.scene
        assert lo <= s.lead_s <= hi and lo <= s.trail_s <= hi
        assert 10 ** (-26 / 20) - 1e-4 <= s.peak <= 10 ** (-1 / 20) + 1e-4
        assert 5.0 <= s.snr_db <= 30.0
        assert s.rt60_s == 0.0 or 0.2 <= s.rt60_s <= 0.7
        if s.noise == "babble":
            assert len(u.babble) == 3 and utts.index(u) not in u.babble
            assert all(0 <= j < _prepare.BABBLE_POOL for j in u.babble)
        else:
            assert u.babble == ()
    kinds = [u.scene.noise for u in utts]
    assert {k: kinds.count(k) > 30 for k in ("none", "white", "pink", "babble")} == dict.fromkeys(
        ("none", "white", "pink", "babble"), True
    )
    assert 0.2 < sum(u.scene.rt60_s > 0 for u in utts) / len(utts) < 0.4
    leads = [u.scene.lead_s for u in utts]
    assert min(leads) < 0.1 and max(leads) > 0.7  # the whole range is used

    u = next(x for x in utts if x.scene.noise == "babble" and x.scene.rt60_s > 0)
    job = _prepare.speech_job(u, utts)
    path, seconds = tts.synthesize_to_file(job)
    clean = job.clean()
    n = round(u.scene.lead_s * 16000) + clean.numel() + round(u.scene.trail_s * 16000)
    assert sf.info(path).frames == n and seconds == n / 16000


def test_prepare_rejects_shared_voices(tmp_path) -> None:
    with pytest.raises(ValueError, match="unseen"):
        prepare(tmp_path, n_train=2, n_dev=1, n_test=1, test_voices=("en-us",))
