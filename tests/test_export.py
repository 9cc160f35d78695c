"""ONNX export and the onnxruntime backend (s2s.export): the exported decoder steps equal the
PyTorch ones step by step through a whole beam search (log-probabilities and written cache
slots), the searches find the same hypotheses with the same peak cache bytes; a bundle made
by s2s-export decodes like its experiment through s2s-decode; a bad bundle is one line naming
it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import BOS, EOS, make_decoder, make_exp, make_lm, scorers_for, search
from omegaconf import OmegaConf

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from s2s.cli.decode import main as decode_main  # noqa: E402
from s2s.cli.export import main as export_main  # noqa: E402
from s2s.decode.beam_search import BeamSearchConfig, beam_search  # noqa: E402
from s2s.decode.compare import Lockstep  # noqa: E402
from s2s.export.onnx_export import export_decoder  # noqa: E402
from s2s.export.runtime import OnnxDecoder  # noqa: E402

# The three variants in both arrangements the recipes use, then the prompt arrangement
# and the variants whose decode steps take their own paths (mfa_kr rotates cached keys as it
# reads them, gla and gta read blocks of a latent slot).
CASES = [
    ("cross", "mha", 1), ("cross", "mla", 1), ("cross", "mtla", 2),
    ("prefix", "mha", 1), ("prefix", "mla", 1), ("prefix", "mtla", 2),
    ("prompt", "mtla", 3), ("prefix", "mfa_kr", 1), ("cross", "gla", 1), ("prefix", "gta", 1),
]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(arrangement, variant, stride) -> (PyTorch decoder, its OnnxDecoder), exported once."""
    done: dict = {}

    def get(arrangement: str, variant: str, stride: int):
        key = (arrangement, variant, stride)
        if key not in done:
            dec = make_decoder(arrangement, variant, stride)
            out = tmp_path_factory.mktemp(f"{arrangement}_{variant}{stride}")
            g = torch.Generator().manual_seed(5)
            info = export_decoder(
                dec, torch.randn(2, 9, 24, generator=g), torch.tensor([9, 7]), out
            )
            done[key] = dec, OnnxDecoder(out, info)
        return done[key]

    return get


def _memory(seed: int):
    """Three utterances, odd frame counts among them: MTLA's prefix ends mid-chunk."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 13, 24, generator=g), torch.tensor([13, 6, 9])


@pytest.mark.parametrize(("arrangement", "variant", "stride"), CASES)
def test_exported_steps_equal_pytorch(exported, arrangement, variant, stride) -> None:
    dec, onnx_dec = exported(arrangement, variant, stride)
    memory, lens = _memory(1)
    lock = Lockstep(dec, onnx_dec)
    cfg = BeamSearchConfig(beam_size=4, nbest=4, max_len_b=10)
    beam_search(scorers_for(cfg, lock), memory, lens, cfg, bos_id=BOS, eos_id=EOS)
    assert lock.steps >= 3 and lock.max_dev < 1e-4  # log-probs and written slots
    for beam in (1, 5):  # then free-running, each on its own
        cfg = BeamSearchConfig(beam_size=beam, nbest=beam, max_len_b=10)
        st_pt, st_ort = {}, {}
        want = search(dec, memory, lens, cfg, stats=st_pt)
        got = search(onnx_dec, memory, lens, cfg, stats=st_ort)
        assert [[h.tokens for h in nb] for nb in got] == [[h.tokens for h in nb] for nb in want]
        for nb_got, nb_want in zip(got, want):
            for h, w in zip(nb_got, nb_want):
                assert h.log_prob == pytest.approx(w.log_prob, abs=1e-4)
        assert st_ort["peak_cache_bytes"] == st_pt["peak_cache_bytes"] > 0


def test_exported_decoder_with_lm_fusion_and_ctc(exported) -> None:
    """Shallow fusion (the LM stays in PyTorch, its caches reordered with the exported
    decoder's) and CTC prefix scoring run over the exported decoder as over PyTorch's."""
    dec, onnx_dec = exported("cross", "mtla", 2)
    lm = make_lm("mtla", 2, seed=4)
    memory, lens = _memory(4)
    g = torch.Generator().manual_seed(4)
    ctc = torch.randn(3, 13, dec.embed.num_embeddings, generator=g).log_softmax(-1)
    cfg = BeamSearchConfig(beam_size=4, nbest=2, max_len_b=8, lm_weight=0.4, ctc_weight=0.3)
    lock = Lockstep(dec, onnx_dec)
    scorers = scorers_for(cfg, lock, ctc, lm)
    beam_search(scorers, memory, lens, cfg, bos_id=BOS, eos_id=EOS)
    assert lock.steps >= 3 and lock.max_dev < 1e-4
    want = search(dec, memory, lens, cfg, ctc=ctc, lm=lm)
    got = search(onnx_dec, memory, lens, cfg, ctc=ctc, lm=lm)
    assert [[h.tokens for h in nb] for nb in got] == [[h.tokens for h in nb] for nb in want]


def test_exported_step_takes_any_batch_and_beam(exported) -> None:
    """The graphs were traced at 2 utterances x 3 beams; one utterance, greedy, and a long
    prefix run through the same files."""
    dec, onnx_dec = exported("prefix", "mtla", 2)
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(1, 41, 24, generator=g)
    lens = torch.tensor([41])
    for beam in (1, 2, 7):
        lock = Lockstep(dec, onnx_dec)
        cfg = BeamSearchConfig(beam_size=beam, max_len_b=5)
        beam_search(scorers_for(cfg, lock), memory, lens, cfg, bos_id=BOS, eos_id=EOS)
        assert lock.steps >= 1 and lock.max_dev < 1e-4
    with pytest.raises(ValueError, match="lean engine"):
        onnx_dec.init_state(memory, lens, beam=2, ancestry=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(experiment with global CMVN and a CTC head, its bundle written by s2s-export, a wav)."""
    from s2s.experiment import (
        build_model,
        load_experiment_config,
        load_tokenizer,
        save_experiment_config,
    )

    root = tmp_path_factory.mktemp("export")
    exp = make_exp(root)
    torch.save({"count": 10, "mean": [0.5] * 80, "std": [2.0] * 80}, exp / "cmvn.pt")
    cfg = load_experiment_config([exp / "config.yaml"])
    cfg.data.cmvn = str(exp / "cmvn.pt")
    cfg.model.ctc_weight = 0.3
    torch.manual_seed(0)
    model = build_model(cfg, load_tokenizer(exp / "tokenizer.model").vocab_size)
    torch.save(model.state_dict(), exp / "model_avg.pt")
    cfg.data.cmvn = "cmvn.pt"
    cfg.data.tokenizer = "tokenizer.model"
    save_experiment_config(cfg, exp / "config.yaml")
    wav = root / "a.wav"
    t = np.arange(24000) / 16000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t), 16000)
    out = root / "bundle"
    assert export_main([str(exp), str(out)]) == 0
    return exp, out, wav


def test_bundle_decodes_like_its_experiment(bundle, tmp_path, capsys) -> None:
    import onnx

    exp, out, wav = bundle
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {
        "encoder.onnx", "ctc.onnx", "decoder_start.onnx", "decoder_step.onnx", "config.yaml",
        "tokenizer.model", "cmvn.pt", "README.md",
    }  # fmt: skip
    assert manifest["model"]["attention"] == "mtla" and manifest["model"]["ctc"]
    for name in ("encoder.onnx", "decoder_step.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
        assert onnx.load(str(out / name)).opset_import[0].version == manifest["opset"]
    assert manifest["model"]["subsampling_factor"] == 4  # the conv2d4 frontend
    capsys.readouterr()
    views = ["decode.encoder_views=4", "decode.views_merge=scores"]
    for setting in (["decode.ctc_weight=0"], ["decode.ctc_weight=0.3"], views):
        assert decode_main(["--model", str(exp), "--format", "json", str(wav), *setting]) == 0
        want = json.loads(capsys.readouterr().out)
        args = ["--model", str(out), "--backend", "onnxruntime", "--threads", "1", "--format",
                "json", str(wav)]  # fmt: skip
        assert decode_main([*args, *setting]) == 0
        got = json.loads(capsys.readouterr().out)
        assert [h["text"] for h in got["nbest"]] == [h["text"] for h in want["nbest"]]
        for g, w in zip(got["nbest"], want["nbest"]):
            assert g["log_prob"] == pytest.approx(w["log_prob"], abs=1e-4)
    assert export_main([str(exp), str(out)]) == 2  # never replaced without --force
    assert "--force" in capsys.readouterr().err
    # a bundle written before the manifest said how its frontend subsamples: no views
    older = shutil.copytree(out, tmp_path / "older")
    del manifest["model"]["subsampling_factor"]
    (older / "MANIFEST.json").write_text(json.dumps(manifest))
    args[1] = str(older)
    _one_line_error([*args, *views], capsys, "not an ONNX bundle that does not say how")
    assert decode_main(args) == 0


def _one_line_error(args: list[str], capsys, *needles: str) -> None:
    capsys.readouterr()
    assert decode_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_bundles_are_one_line_naming_them(bundle, tmp_path, capsys) -> None:
    exp, out, wav = bundle

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(out, dst)
        return dst

    def edit_manifest(folder: Path, **model) -> None:
        m = json.loads((folder / "MANIFEST.json").read_text())
        for key, value in model.items():
            (m["model"] if key == "attention" else m)[key] = value
        (folder / "MANIFEST.json").write_text(json.dumps(m))

    def decode(folder: Path) -> list[str]:
        return ["--model", str(folder), "--backend", "onnxruntime", str(wav)]

    missing = copy("missing")
    (missing / "decoder_step.onnx").unlink()
    _one_line_error(decode(missing), capsys, str(missing), "decoder_step.onnx is missing")
    altered = copy("altered")
    with open(altered / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    _one_line_error(decode(altered), capsys, str(altered), "encoder.onnx differs")
    older = copy("older")
    edit_manifest(older, s2s="0.0.1")
    _one_line_error(decode(older), capsys, str(older), "exported by s2s '0.0.1'")
    unknown = copy("unknown")
    edit_manifest(unknown, attention="xla")
    _one_line_error(decode(unknown), capsys, str(unknown), "'xla' is not one this s2s knows")
    newer = copy("newer")
    edit_manifest(newer, version=99)
    _one_line_error(decode(newer), capsys, str(newer), "format version 99")
    _one_line_error(decode(exp), capsys, str(exp), "not an ONNX bundle", "s2s-export")
    _one_line_error(["--model", str(out), "--backend", "torch", str(wav)], capsys, str(out))
    no_manifest = copy("no_manifest")
    (no_manifest / "MANIFEST.json").unlink()
    _one_line_error(decode(no_manifest), capsys, str(no_manifest), "no MANIFEST.json")
    cfg = OmegaConf.load(out / "config.yaml")  # the bundle's own config still names its copies
    assert cfg.data.tokenizer == "tokenizer.model" and cfg.data.cmvn == "cmvn.pt"


def test_lockstep_sees_a_different_decoder() -> None:
    """The comparison can fail: two decoders that differ are far apart at the first step."""
    a, b = make_decoder("prefix", "mtla", 2, seed=0), make_decoder("prefix", "mtla", 2, seed=1)
    memory, lens = _memory(2)
    lock = Lockstep(a, b)
    cfg = BeamSearchConfig(beam_size=2, max_len_b=3)
    beam_search(scorers_for(cfg, lock), memory, lens, cfg, bos_id=BOS, eos_id=EOS)
    assert lock.max_dev > 1e-2


def test_text_bundle_decodes_like_its_experiment(tmp_path) -> None:
    """A summarisation-style model (token-id source): the encoder graph takes ids."""
    from s2s.decode.inference import Speech2Text

    exp = make_exp(tmp_path, text=True)
    assert export_main([str(exp), str(tmp_path / "bundle")]) == 0
    docs = ["the cat sat on the mat", "a dog", "hello world again and again"]
    want = Speech2Text.from_pretrained(exp).decode_texts(docs)
    got = Speech2Text.from_pretrained(tmp_path / "bundle").decode_texts(docs)
    assert [[r.tokens for r in nb] for nb in got] == [[r.tokens for r in nb] for nb in want]


def test_onnx_decode_benchmark_on_the_bundle(bundle, tmp_path) -> None:
    from s2s.data.datadir import write_datadir
    from s2s.evaluate import onnx_decode

    exp, out, _ = bundle
    wavs = {}
    for i, f in enumerate((220, 330, 550)):
        t = np.arange(12000 + 4000 * i) / 16000
        wavs[f"spk-u{i}"] = str(tmp_path / f"u{i}.wav")
        sf.write(wavs[f"spk-u{i}"], 0.3 * np.sin(2 * np.pi * f * t), 16000)
    data = tmp_path / "data"
    texts = {"text": dict.fromkeys(wavs, "a b")}
    write_datadir(data, wav_scp=wavs, texts=texts, utt2spk=dict.fromkeys(wavs, "spk"))
    report_path = tmp_path / "r.json"
    args = ["--model", str(exp), "--data", str(data), "--bundle", str(out), "--threads", "1"]
    threads = torch.get_num_threads()
    assert onnx_decode.main([*args, "--beams", "1", "3", "--json", str(report_path)]) == 0
    # run in-process, it leaves the caller's autograd and threads as they were
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    report = json.loads(report_path.read_text())
    assert report["utterances"] == 3 and report["onnx_bytes"] > 0
    assert [r["beam"] for r in report["beams"]] == [1, 3]
    for row in report["beams"]:
        assert row["same_nbest"] == 1.0
        assert row["onnxruntime_peak_cache_bytes"] == row["pytorch_peak_cache_bytes"] > 0
    assert report["lockstep"]["steps"] > 0 and report["lockstep"]["step_max_dev"] < 1e-4


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_relative_position_encoders_export(tmp_path, encoder) -> None:
    """pos: rel (conf/model/small.yaml's) exports through the written-out softmax, and the
    exported encoder computes what the PyTorch one does, at lengths it was not traced at."""
    import onnxruntime as ort
    from torch.export import Dim

    from s2s.experiment import build_model, load_experiment_config, load_tokenizer
    from s2s.export.graphs import EncoderGraph
    from s2s.export.onnx_export import BIG, _export

    exp = make_exp(tmp_path)
    cfg = load_experiment_config([exp / "config.yaml"])
    cfg.model.encoder.type, cfg.model.encoder.pos = encoder, "rel"
    torch.manual_seed(0)
    model = build_model(cfg, load_tokenizer(exp / "tokenizer.model").vocab_size).eval()
    g = torch.Generator().manual_seed(0)
    b, t = Dim("batch", min=1, max=BIG), Dim("time", min=7, max=BIG)
    _export(
        EncoderGraph(model),
        (torch.randn(2, 64, 80, generator=g), torch.tensor([64, 48])),
        (["src", "src_lens"], ["memory", "memory_lens"]),
        ({0: b, 1: t}, {0: b}),
        tmp_path / "encoder.onnx",
    )
    src, lens = torch.randn(3, 150, 80, generator=g), torch.tensor([150, 97, 31])
    got = ort.InferenceSession(str(tmp_path / "encoder.onnx")).run(
        None, {"src": src.numpy(), "src_lens": lens.numpy()}
    )
    with torch.no_grad():
        memory, memory_lens = model.encode(src, lens)
    assert torch.equal(torch.from_numpy(got[1]), memory_lens)
    torch.testing.assert_close(torch.from_numpy(got[0]), memory, rtol=1e-4, atol=1e-5)


def test_paper_size_benchmark_runs_on_a_small_config(tmp_path) -> None:
    """python -m s2s.bench.onnx_paper, at conf/model/tiny.yaml's size: same hypotheses, same
    peak cache, both speeds reported."""
    from s2s.bench import onnx_paper

    out = tmp_path / "r.json"
    args = ["--variants", "mtla", "--threads", "1", "--utts", "3", "--tokens", "4", "--beam", "2"]
    tiny = str(onnx_paper.CONF / "model" / "tiny.yaml")
    threads = torch.get_num_threads()
    assert onnx_paper.main([*args, "--model-config", tiny, "--json", str(out)]) == 0
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    (row,) = json.loads(out.read_text())
    assert row["same_hypotheses"] and row["pytorch_utt_per_s"] > 0
    assert row["onnxruntime_peak_cache_bytes"] == row["pytorch_peak_cache_bytes"] > 0
