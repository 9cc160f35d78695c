"""s2s-pack and loading packs: a tiny experiment packed into one file decodes as the directory
does (s2s-decode --model PACK, Speech2Text.from_pretrained), and damaged packs are clear
errors naming the file, refused from their tar headers in bounded memory (a 3 GiB gzip bomb,
links, unlisted or oversized members)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zlib
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


# --- hostile archives: refused from their headers, in bounded memory ---------------------------

BOMB_BYTES = 3 << 30  # 3 GiB of zeros, about 3 MB gzipped


def _tar_block(name: str, size: int, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    """The 512-byte tar header of one member."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mode = size, kind, link, 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    """A whole member: header, data, zero padding to the next block."""
    return _tar_block(name, len(data)) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _gzip_then_zeros(path: Path, prefix: bytes, zeros: int) -> Path:
    """Writes gzip(prefix + `zeros` zero bytes) without ever compressing (or holding) the zeros:
    after a full flush a deflate stream restarts, so every MiB of zeros compresses to the same
    bytes, compressed once and written `zeros` / 1 MiB times. The CRC is computed by chunks."""
    mib = bytes(1 << 20)
    assert zeros % len(mib) == 0
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, our own gzip frame
    head = z.compress(prefix) + z.flush(zlib.Z_FULL_FLUSH)
    first = z.compress(mib) + z.flush(zlib.Z_FULL_FLUSH)
    again = z.compress(mib) + z.flush(zlib.Z_FULL_FLUSH)
    assert z.compress(mib) + z.flush(zlib.Z_FULL_FLUSH) == again  # the steady state
    crc = zlib.crc32(prefix)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + first)
        for _ in range(zeros // len(mib) - 1):
            f.write(again)
        for _ in range(zeros // len(mib)):
            crc = zlib.crc32(mib, crc)
        f.write(z.flush())
        f.write(struct.pack("<II", crc, (len(prefix) + zeros) & 0xFFFFFFFF))
    return path


def _manifest(files: dict[str, bytes]) -> bytes:
    entries = {
        n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
    }
    return json.dumps({"format": "s2s-pack", "version": 1, "files": entries}).encode()


REQUIRED_FILES = {n: b"x" for n in ("config.yaml", "model_avg.pt", "tokenizer.model", "README.md")}
MANIFEST_MEMBER = _member("m/MANIFEST.json", _manifest(REQUIRED_FILES))

# A small pack-like stream ending in a member the reader must refuse from its header, followed
# by BOMB_BYTES of zeros (the refused member's data, then more zeros: tar's end-of-archive).
HOSTILE = {
    "no manifest, one 3 GiB member": (
        _tar_block("m/zeros.bin", BOMB_BYTES),
        r"not an s2s model pack \(its first member is 'm/zeros\.bin'",
    ),
    "a 3 GiB member listed as 1 byte": (
        MANIFEST_MEMBER + _tar_block("m/model_avg.pt", BOMB_BYTES),
        r"model_avg\.pt differs from its MANIFEST\.json entry: 3221225472 bytes, not 1",
    ),
    "a 3 GiB manifest": (
        _tar_block("m/MANIFEST.json", BOMB_BYTES),
        r"MANIFEST\.json is 3221225472 bytes",
    ),
    "a symbolic link": (
        MANIFEST_MEMBER + _tar_block("m/config.yaml", 0, tarfile.SYMTYPE, "/etc/passwd"),
        r"member 'm/config\.yaml' is a link to '/etc/passwd'",
    ),
    "an unlisted member": (
        MANIFEST_MEMBER + _member("m/config.yaml", b"x") + _tar_block("m/run.py", 1),
        r"member 'm/run\.py' is not listed in MANIFEST\.json",
    ),
    "a path out of the folder": (
        MANIFEST_MEMBER + _tar_block("m/../../x", 1),
        r"member 'm/\.\./\.\./x': a pack holds <name>/<file> paths only",
    ),
    "an absolute path": (
        MANIFEST_MEMBER + _tar_block("/m/x", 1),
        r"member '/m/x': a pack holds <name>/<file> paths only",
    ),
    "a device": (
        MANIFEST_MEMBER + _tar_block("m/config.yaml", 0, tarfile.CHRTYPE),
        r"member 'm/config\.yaml' is a device or pipe",
    ),
    "a 3 GiB extended header": (
        MANIFEST_MEMBER + _tar_block("m/././@LongLink", BOMB_BYTES, tarfile.GNUTYPE_LONGNAME),
        r"a tar header of more than \d+ bytes",
    ),
}

# Unpacks argv[1] into argv[2] in a fresh interpreter, as s2s-decode --model would, printing
# the error and then the process's own peak RSS in KiB: VmHWM, the high-water mark of this
# process image. (ru_maxrss is kept across exec, so a child forked from the test, which holds
# torch, would report the test's own size; RUSAGE_CHILDREN would also count every other child
# the test session waited for.)
_CHILD = """
import sys
from s2s.pack import PackError, unpack_model
try:
    unpack_model(sys.argv[1], sys.argv[2])
except PackError as e:
    print(e)
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(status.split()[0])
"""


def _unpack_in_child(pack: Path, dest: Path) -> tuple[list[str], float, float]:
    """(error lines, seconds, peak RSS in MB) of unpacking `pack` in a child process."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(pack), str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    *lines, peak_kib = out.stdout.splitlines()
    return lines, seconds, int(peak_kib) / 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_packs_are_refused_fast_in_bounded_memory(case: str, tmp_path: Path) -> None:
    prefix, message = HOSTILE[case]
    pack = _gzip_then_zeros(tmp_path / "bomb.tar.gz", prefix, BOMB_BYTES)
    assert pack.stat().st_size < 4 << 20  # a few MB on disk
    lines, seconds, peak_mb = _unpack_in_child(pack, tmp_path / "out")
    assert len(lines) == 1 and lines[0].startswith(f"{pack}: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert seconds < 5, f"{case}: refused after {seconds:.1f} s"
    assert peak_mb < 500, f"{case}: peak RSS {peak_mb:.0f} MB"
    written = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert all(p.stat().st_size <= 1 for p in written)  # nothing of the bomb reached the disk


def test_bomb_helper_writes_a_valid_gzip(tmp_path: Path) -> None:
    """_gzip_then_zeros makes what gzip itself reads back (checked at a readable size)."""
    path = _gzip_then_zeros(tmp_path / "z.gz", b"head", 3 << 20)
    assert gzip.decompress(path.read_bytes()) == b"head" + bytes(3 << 20)
