"""s2s-pack and loading packs: a tiny experiment packed into one file decodes as the directory
does (s2s-decode --model PACK, Speech2Text.from_pretrained), and damaged packs are clear
errors naming the file."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_exp
from omegaconf import OmegaConf

from s2s.cli.decode import main as decode_main
from s2s.cli.pack import main as pack_main
from s2s.decode.inference import Speech2Text
from s2s.pack import PackError, unpack_model

SCORE = {"metrics": {"bleu": 12.345, "chrf": 40.0}, "n_utterances": 7}


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(experiment dir with global CMVN, its pack, a wav file): the pack made by the CLI."""
    root = tmp_path_factory.mktemp("pack")
    exp = make_exp(root)
    torch.save({"count": 10, "mean": [0.5] * 80, "std": [2.0] * 80}, exp / "cmvn.pt")
    cfg = OmegaConf.load(exp / "config.yaml")
    cfg.data.cmvn = "cmvn.pt"  # relative to config.yaml, as s2s-train writes it
    OmegaConf.save(cfg, exp / "config.yaml")
    (exp / "decode_test_beam5").mkdir()
    (exp / "decode_test_beam5" / "score.json").write_text(json.dumps(SCORE))
    wav = root / "a.wav"
    t = np.arange(16000) / 16000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t), 16000)
    pack = root / "model.tar.gz"
    assert pack_main([str(exp), str(pack)]) == 0
    return exp, pack, wav


def test_pack_holds_the_experiment_and_decodes_like_it(packed, tmp_path, capsys) -> None:
    exp, pack, wav = packed
    with tarfile.open(pack) as tar:
        names = sorted(tar.getnames())
        readme = tar.extractfile("exp_speech/README.md").read().decode()
    assert names == [
        f"exp_speech/{n}"
        for n in (
            "MANIFEST.json", "README.md", "cmvn.pt", "config.yaml", "model_avg.pt",
            "tokenizer.model",
        )
    ]  # fmt: skip
    assert "| decode_test_beam5 | 7 | 12.35 | 40.00 |" in readme and "model_avg.pt" in readme
    assert pack_main([str(exp), str(pack)]) == 2  # never replaced without --force
    assert "--force" in capsys.readouterr().err

    capsys.readouterr()
    assert decode_main(["--model", str(exp), "--format", "json", str(wav)]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    moved = tmp_path / "elsewhere.tar.gz"  # the pack alone is enough
    shutil.copy(pack, moved)
    assert decode_main(["--model", str(moved), "--format", "json", str(wav)]) == 0
    from_pack = json.loads(capsys.readouterr().out)
    assert from_pack["nbest"] == from_dir["nbest"]

    s2t = Speech2Text.from_pretrained(moved)
    assert s2t.cmvn is not None and torch.all(s2t.cmvn.mean == 0.5)
    assert [r.tokens for r in s2t(wav)] == [r.tokens for r in Speech2Text.from_dir(exp)(wav)]
    unpacked = Path(s2t._unpacked.name)
    assert (unpacked / "config.yaml").is_file()
    del s2t
    assert not unpacked.exists()  # the temporary directory goes with the object


def _rebuild(pack: Path, out: Path, name: str, data: bytes, fix_manifest: bool) -> Path:
    """A copy of `pack` with member `name` replaced (and the manifest updated to match)."""
    with tarfile.open(pack) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    top = next(iter(files)).split("/")[0]
    files[f"{top}/{name}"] = data
    if fix_manifest:
        import hashlib

        manifest = json.loads(files[f"{top}/MANIFEST.json"])
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        files[f"{top}/MANIFEST.json"] = json.dumps(manifest).encode()
    with tarfile.open(out, "w:gz") as tar:
        for member, content in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out


def test_damaged_packs_are_clear_errors(packed, tmp_path, capsys) -> None:
    _, pack, wav = packed
    data = pack.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackError, match=r"truncated\.tar\.gz: not a readable model pack"):
        Speech2Text.from_pretrained(truncated)
    assert decode_main(["--model", str(truncated), str(wav)]) == 2
    assert "truncated.tar.gz: not a readable model pack" in capsys.readouterr().err

    flipped = tmp_path / "flipped.tar.gz"
    middle = len(data) // 2
    flipped.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    with pytest.raises(PackError, match=r"flipped\.tar\.gz: "):
        unpack_model(flipped, tmp_path / "f")

    other = tmp_path / "notes.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("notes/a.txt"), io.BytesIO(b""))
    with pytest.raises(PackError, match="not an s2s model pack"):
        unpack_model(other, tmp_path / "o")

    altered = _rebuild(pack, tmp_path / "altered.tar.gz", "config.yaml", b"x: 1\n", False)
    with pytest.raises(PackError, match="config.yaml differs from its MANIFEST.json entry"):
        unpack_model(altered, tmp_path / "a")

    # Weights that would run code when unpickled in full: refused by the weights-only load.
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("x")}, buf)
    evil = _rebuild(pack, tmp_path / "evil.tar.gz", "model_avg.pt", buf.getvalue(), True)
    with pytest.raises(ValueError, match=r"model_avg\.pt: not a weights-only file"):
        Speech2Text.from_pretrained(evil)
