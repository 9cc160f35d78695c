"""A trained experiment as one file, for sharing: `s2s-pack exp/x model.tar.gz`.

A pack is a gzipped tar holding one folder, `<experiment name>/`, with

    config.yaml        the experiment config; data.tokenizer / data.cmvn name the copies below
    model_avg.pt       {"model": state_dict}: tensors only, loaded with torch.load(weights_only)
    tokenizer.model    the SentencePiece model
    cmvn.pt            global CMVN statistics (speech models trained with them)
    README.md          what the model is, its scores (every decode_*/score.json), how to use it
    MANIFEST.json      format version, s2s version, date, and each file's size and SHA-256

so the unpacked folder is an experiment directory that `Speech2Text.from_dir` reads. The
manifest, README layout and checks are s2s.artifact's (an ONNX bundle shares them); what is
a pack's own is the tar stream. MANIFEST.json is the archive's first member. `unpack_model`
reads the archive once, as a stream, in bounded memory: the manifest first, then only the
files it lists, each refused from its tar header alone when it is not a listed regular file
of the listed size, and streamed to disk while its SHA-256 is computed. Every way a pack can
be damaged (truncated, corrupt, not a pack, a file missing, altered or unlisted, a link,
weights that are not plain tensors) is one PackError naming the pack.
`Speech2Text.from_pretrained(path)` and `s2s-decode --model` take a pack or a directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from s2s.artifact import (
    MANIFEST,
    PACK,
    PackError,
    check_sha256,
    check_size,
    created,
    entries_of_bytes,
    make_manifest,
    manifest_bytes,
    parse_manifest,
    readme,
)

WEIGHTS = "model_avg.pt"  # the name from_dir looks for first
MAX_MANIFEST_BYTES = 1 << 20
HEADER_BYTES = 1 << 20  # the most tar header bytes read before a member's data (pax included)
CHUNK = 1 << 20  # bytes copied at a time


def _scores(exp_dir: Path) -> list[tuple[str, dict]]:
    """(decode dir name, score.json) for every scored decoding of the experiment."""
    out = []
    for path in sorted(exp_dir.glob("decode_*/score.json")):
        try:
            out.append((path.parent.name, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue  # a half-written score is no score
    return out


def _readme(name: str, cfg, weights: str, scores: list[tuple[str, dict]]) -> str:
    att = cfg.model.decoder.self_attention()
    about = (
        f"An s2s model ({cfg.data.source} -> text): {cfg.model.encoder.type} encoder, "
        f"{att.type} decoder self-attention, `{cfg.model.decoder.arrangement}` arrangement; "
        f"weights from `{weights}`."
    )
    if scores:
        keys = sorted({k for _, s in scores for k in s.get("metrics", {})})
        table = ["| decoding | utterances | " + " | ".join(keys) + " |"]
        table.append("|---|---:|" + "---:|" * len(keys))
        for decode, s in scores:
            m = s.get("metrics", {})
            cells = [f"{m[k]:.2f}" if k in m else "-" for k in keys]
            table.append(f"| {decode} | {s.get('n_utterances', '-')} | " + " | ".join(cells) + " |")
    else:
        table = ["No scored decoding in the experiment when it was packed."]
    use = "a.wav b.flac" if cfg.data.source == "speech" else "--text documents.txt"
    return readme(
        name,
        about,
        f"s2s-decode --model {name}.tar.gz {use}",
        f"{name}.tar.gz",
        sections=[("Scores", "\n".join(table))],
    )


def pack_experiment(exp_dir: str | Path, out: str | Path, checkpoint: str = "") -> Path:
    """Write `out` (a .tar.gz) from exp_dir: its config, tokenizer, CMVN, and the weights of
    model_avg.pt (or of `checkpoint`, a trainer checkpoint or weights file), checked to load
    into the model the config builds (s2s.experiment.load_experiment). Returns `out`."""
    import torch  # here, not at the top: reading a pack needs neither torch nor the models

    from s2s.experiment import ExperimentError, load_experiment

    exp_dir, out = Path(exp_dir), Path(out)
    try:
        exp = load_experiment(exp_dir, checkpoint=checkpoint, lm=False)
    except ExperimentError as e:
        raise PackError(str(e)) from e
    weights = exp.weights
    weights = weights.relative_to(exp_dir) if weights.is_relative_to(exp_dir) else weights.name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = exp.copy_to(tmp)  # config.yaml, tokenizer.model, cmvn.pt
        torch.save({"model": exp.model.state_dict()}, tmp / WEIGHTS)
        (tmp / "README.md").write_text(_readme(exp_dir.name, cfg, str(weights), _scores(exp_dir)))
        files = {p.name: p.read_bytes() for p in tmp.iterdir()}
    info = {"experiment": exp_dir.name, "weights": str(weights), "created": created()}
    files[MANIFEST] = manifest_bytes(make_manifest(PACK, entries_of_bytes(files), info))

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    mtime = int(time.time())
    with tarfile.open(partial, "w:gz") as tar:
        for name in [MANIFEST, *sorted(set(files) - {MANIFEST})]:
            info = tarfile.TarInfo(f"{exp_dir.name}/{name}")
            info.size, info.mode, info.mtime = len(files[name]), 0o644, mtime
            tar.addfile(info, io.BytesIO(files[name]))
    os.replace(partial, out)  # a reader never sees a half-written pack
    return out


class _Budget(io.RawIOBase):
    """The decompressed archive, handed to tarfile a chunk at a time, refusing to give more
    than `allow`-ed bytes past the point set last: tarfile reads an extended header (pax, GNU
    long name, sparse map) whole into memory, so every header read is capped at HEADER_BYTES
    and every file's data at its size, whatever the archive claims."""

    def __init__(self, stream: gzip.GzipFile) -> None:
        self.stream, self.read_bytes, self.limit = stream, 0, 0

    def allow(self, n: int) -> None:
        self.limit = self.read_bytes + n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        room = self.limit - self.read_bytes
        if room <= 0:
            raise _Refused(f"a tar header of more than {HEADER_BYTES} bytes (extended headers?)")
        data = self.stream.read(min(len(buf), room))
        buf[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


class _Refused(Exception):
    """What makes a pack unacceptable (the message says what; unpack_model names the pack)."""


def _member_kind(member: tarfile.TarInfo) -> str:
    """What a non-regular member is, in words."""
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    if member.isdir():
        return "a directory"
    if member.isdev():
        return "a device or pipe"
    return f"a member of tar type {member.type!r}"


def _check_header(member: tarfile.TarInfo, top: str | None, listed: dict, pack: Path) -> str:
    """The manifest name of `member`, or _Refused (PackError for its size): only regular files
    `<top>/<listed name>` of the listed size belong in a pack. Decided from the header alone,
    before any data."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or len(parts) != 2 or not all(parts):
        raise _Refused(f"member {name!r}: a pack holds <name>/<file> paths only")
    if not member.isreg() or member.issparse():
        raise _Refused(f"member {name!r} is {_member_kind(member)}; a pack holds files only")
    if top is not None and parts[0] != top:
        raise _Refused(f"member {name!r} is outside {top}/")
    if parts[1] not in listed:
        raise _Refused(f"member {name!r} is not listed in {MANIFEST}")
    check_size(PACK, pack, parts[1], member.size, listed[parts[1]])
    return parts[1]


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, out, budget: _Budget) -> str:
    """Streams `member` into the open file `out`; returns its SHA-256."""
    budget.allow(member.size + HEADER_BYTES)  # _Stream reads ahead a record at most
    src = tar.extractfile(member)
    assert src is not None  # a regular file
    digest, n = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        n += len(chunk)
        if n > member.size:  # tarfile stops at the header's size; be sure of it
            raise _Refused(f"{member.name} is longer than its {member.size} bytes")
        digest.update(chunk)
        out.write(chunk)
    if n != member.size:
        raise EOFError(f"{member.name} ends after {n} of {member.size} bytes")
    return digest.hexdigest()


def _read_manifest(
    tar: tarfile.TarFile, first: tarfile.TarInfo | None, budget: _Budget, pack: Path
) -> tuple[str, dict]:
    """(top folder, manifest) from the archive's first member, which s2s-pack always writes
    first so that nothing is read before the reader knows what the pack may hold; the
    manifest checked as s2s.artifact checks every manifest (PackError naming the pack)."""
    name = first.name if first is not None else ""
    top, _, base = name.partition("/")
    if first is None or base != MANIFEST or "/" in top or not top or not first.isreg():
        got = f"its first member is {name!r}" if first is not None else "it is empty"
        raise _Refused(f"not an s2s model pack ({got}, not <name>/{MANIFEST})")
    if first.size > MAX_MANIFEST_BYTES:
        raise _Refused(f"{name} is {first.size} bytes (a manifest is < {MAX_MANIFEST_BYTES})")
    with io.BytesIO() as buf:
        _copy(tar, first, buf, budget)
        text = buf.getvalue()
    return top, parse_manifest(PACK, text, pack)


def _extract(pack: Path, dest: Path) -> None:
    """Reads `pack` as one stream: the manifest, then each listed file straight to dest."""
    with open(pack, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
        budget = _Budget(gz)
        budget.allow(HEADER_BYTES)
        with tarfile.open(fileobj=budget, mode="r|") as tar:  # "r|": never seeks back
            top, manifest = _read_manifest(tar, tar.next(), budget, pack)  # read at open
            listed, seen = manifest["files"], set()
            while True:
                budget.allow(HEADER_BYTES)
                member = tar.next()
                if member is None:
                    break
                name = _check_header(member, top, listed, pack)
                if name in seen:
                    raise _Refused(f"{name} is in the pack twice")
                seen.add(name)
                with open(dest / name, "wb") as out:
                    sha = _copy(tar, member, out, budget)
                check_sha256(PACK, pack, name, sha, listed[name])
        trailing = 0  # tar pads its end to a record; read on to the gzip trailer, whose
        while chunk := gz.read(CHUNK):  # CRC and length catch a damaged end
            trailing += len(chunk)
            if trailing > HEADER_BYTES:
                raise _Refused(f"more than {HEADER_BYTES} bytes after the end of the archive")
    missing = sorted(set(listed) - seen)
    if missing:
        raise _Refused(f"lacks {', '.join(missing)}")


def unpack_model(pack: str | Path, dest: str | Path) -> Path:
    """Check `pack` and write its files into `dest` (an experiment directory); returns dest.

    The archive is read once, as a stream, with memory bounded by a constant (a few MiB)
    whatever it claims: its first member must be the manifest; every later member must be a
    regular file the manifest lists, of the listed size (decided from its header, before its
    data is read), and is streamed to dest while its SHA-256 is computed. Raises PackError,
    naming the pack, for a file that is not a readable gzipped tar (truncated, corrupt), has
    no manifest of this format first, lacks a file, holds anything else (another member, a
    link, a device, an absolute or `..` path), or a file whose size or SHA-256 differ from
    the manifest's."""
    pack, dest = Path(pack), Path(dest)
    if not pack.is_file():
        raise PackError(f"{pack}: no such model pack")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _extract(pack, dest)
    except _Refused as e:
        raise PackError(f"{pack}: {e}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise PackError(f"{pack}: not a readable model pack (truncated or corrupt?): {e}") from e
    return dest
