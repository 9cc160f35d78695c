"""A trained experiment as one file, for sharing: `s2s-pack exp/x model.tar.gz`.

A pack is a gzipped tar holding one folder, `<experiment name>/`, with

    config.yaml        the experiment config; data.tokenizer / data.cmvn name the copies below
    model_avg.pt       {"model": state_dict}: tensors only, loaded with torch.load(weights_only)
    tokenizer.model    the SentencePiece model
    cmvn.pt            global CMVN statistics (speech models trained with them)
    README.md          what the model is, its scores (every decode_*/score.json), how to use it
    MANIFEST.json      format version, s2s version, date, and each file's size and SHA-256

so the unpacked folder is an experiment directory that `Speech2Text.from_dir` reads.
`unpack_model` extracts only the files the manifest lists, checks each against its size and
SHA-256, and turns every way a pack can be damaged (truncated, corrupt, not a pack, a file
missing or altered, weights that are not plain tensors) into one PackError naming the pack.
`Speech2Text.from_pretrained(path)` and `s2s-decode --model` take a pack or a directory.
"""

from __future__ import annotations

import datetime
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

import torch

from s2s import __version__
from s2s.experiment import (
    build_model,
    load_experiment_config,
    load_model_weights,
    load_tokenizer,
    save_experiment_config,
)

FORMAT = "s2s-pack"
VERSION = 1
MANIFEST = "MANIFEST.json"
WEIGHTS = "model_avg.pt"  # the name from_dir looks for first
REQUIRED = ("config.yaml", WEIGHTS, "tokenizer.model", "README.md")


class PackError(ValueError):
    """A model pack that cannot be made or read; the message names the file."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    task = f"{cfg.data.source} -> text"
    lines = [
        f"# {name}",
        "",
        f"An s2s model ({task}): {cfg.model.encoder.type} encoder, {att.type} decoder "
        f"self-attention, `{cfg.model.decoder.arrangement}` arrangement; weights from "
        f"`{weights}`.",
        "",
        "## Scores",
        "",
    ]
    if scores:
        keys = sorted({k for _, s in scores for k in s.get("metrics", {})})
        lines.append("| decoding | utterances | " + " | ".join(keys) + " |")
        lines.append("|---|---:|" + "---:|" * len(keys))
        for decode, s in scores:
            m = s.get("metrics", {})
            cells = [f"{m[k]:.2f}" if k in m else "-" for k in keys]
            lines.append(f"| {decode} | {s.get('n_utterances', '-')} | " + " | ".join(cells) + " |")
    else:
        lines.append("No scored decoding in the experiment when it was packed.")
    use = "a.wav b.flac" if cfg.data.source == "speech" else "--text documents.txt"
    lines += [
        "",
        "## Use",
        "",
        "```sh",
        f"s2s-decode --model {name}.tar.gz {use}",
        "```",
        "",
        "```python",
        "from s2s.decode.inference import Speech2Text",
        f's2t = Speech2Text.from_pretrained("{name}.tar.gz")',
        "```",
        "",
        f"{MANIFEST} lists every file with its SHA-256.",
        "",
    ]
    return "\n".join(lines)


def pack_experiment(exp_dir: str | Path, out: str | Path, checkpoint: str = "") -> Path:
    """Write `out` (a .tar.gz) from exp_dir: its config, tokenizer, CMVN, and the weights of
    model_avg.pt (or of `checkpoint`, a trainer checkpoint or weights file), checked to load
    into the model the config builds. Returns `out`."""
    exp_dir, out = Path(exp_dir), Path(out)
    if not (exp_dir / "config.yaml").is_file():
        raise PackError(f"{exp_dir}/config.yaml not found: is {exp_dir} an experiment?")
    cfg = load_experiment_config([exp_dir / "config.yaml"])
    files: dict[str, bytes] = {}
    tokenizer_src = cfg.data.tokenizer
    for key, name in (("tokenizer", "tokenizer.model"), ("cmvn", "cmvn.pt")):
        src = getattr(cfg.data, key)
        if not src:
            continue
        if not Path(src).is_file():
            raise PackError(f"{exp_dir}/config.yaml: data.{key} {src} not found")
        files[name] = Path(src).read_bytes()
        setattr(cfg.data, key, name)
    if "tokenizer.model" not in files:
        raise PackError(f"{exp_dir}/config.yaml: data.tokenizer is not set")

    model = build_model(cfg, load_tokenizer(tokenizer_src).vocab_size)
    try:
        source = load_model_weights(model, exp_dir, checkpoint)
    except (FileNotFoundError, RuntimeError) as e:  # RuntimeError: keys or shapes differ
        raise PackError(f"{exp_dir}: {e}") from e
    buf = io.BytesIO()
    torch.save({"model": model.state_dict()}, buf)
    files[WEIGHTS] = buf.getvalue()

    with tempfile.TemporaryDirectory() as tmp:
        save_experiment_config(cfg, Path(tmp) / "config.yaml")
        files["config.yaml"] = (Path(tmp) / "config.yaml").read_bytes()
    weights = source.relative_to(exp_dir) if source.is_relative_to(exp_dir) else source.name
    files["README.md"] = _readme(exp_dir.name, cfg, str(weights), _scores(exp_dir)).encode()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "s2s": __version__,
        "experiment": exp_dir.name,
        "weights": str(weights),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": {n: {"bytes": len(d), "sha256": _sha256(d)} for n, d in sorted(files.items())},
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()

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


def _read_members(pack: Path) -> dict[str, bytes]:
    """Every regular file of the archive, by its path inside it (read fully, so a truncated or
    corrupt stream fails here)."""
    out = {}
    with tarfile.open(pack, "r:gz") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                out[member.name] = f.read()
    return out


def unpack_model(pack: str | Path, dest: str | Path) -> Path:
    """Check `pack` and write its files into `dest` (an experiment directory); returns dest.

    Raises PackError, naming the pack, for a file that is not a readable gzipped tar (truncated,
    corrupt), has no manifest of this format, lacks a file, or holds one whose size or SHA-256
    differ from the manifest's."""
    pack, dest = Path(pack), Path(dest)
    if not pack.is_file():
        raise PackError(f"{pack}: no such model pack")
    try:
        members = _read_members(pack)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise PackError(f"{pack}: not a readable model pack (truncated or corrupt?): {e}") from e
    tops = {name.split("/", 1)[0] for name in members}
    top = tops.pop() if len(tops) == 1 else None
    if top is None or f"{top}/{MANIFEST}" not in members:
        raise PackError(f"{pack}: not an s2s model pack (no <name>/{MANIFEST} in it)")
    try:
        manifest = json.loads(members[f"{top}/{MANIFEST}"])
        listed = manifest["files"]
        ok = manifest["format"] == FORMAT and isinstance(listed, dict)
    except (ValueError, KeyError, TypeError) as e:
        raise PackError(f"{pack}: unreadable {MANIFEST}: {e}") from e
    if not ok:
        raise PackError(f"{pack}: {MANIFEST} is not an {FORMAT} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise PackError(
            f"{pack}: pack format version {version!r}: this s2s reads versions up to "
            f"{VERSION} (a newer pack needs a newer s2s)"
        )
    missing = [n for n in (*REQUIRED, *listed) if f"{top}/{n}" not in members]
    if missing:
        raise PackError(f"{pack}: lacks {', '.join(sorted(set(missing)))}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, meta in listed.items():
        if "/" in name or name.startswith("."):
            raise PackError(f"{pack}: {MANIFEST} lists an unsafe file name {name!r}")
        data = members[f"{top}/{name}"]
        if len(data) != meta.get("bytes") or _sha256(data) != meta.get("sha256"):
            raise PackError(f"{pack}: {name} differs from its {MANIFEST} entry (corrupt pack)")
        (dest / name).write_bytes(data)
    return dest
