"""What s2s hands to others: a model pack (`s2s-pack`, s2s/pack.py: one .tar.gz to share) and
an ONNX bundle (`s2s-export`, s2s/export/bundle.py: a folder to serve). Both hold an
experiment's files with a README.md and a MANIFEST.json; this module is what they share:

- the two formats (PACK, BUNDLE): name, version, the files each must list;
- the manifest, one JSON object:
  {"format", "version", "s2s", <what the artifact adds>, "files": {name: {"bytes", "sha256"}}},
  written over every other file, and its checks: format, version, file names, entries, the
  required files, then each file's size and SHA-256 against its entry;
- the README's layout: what the model is, the artifact's own sections, how to use it;
- one error family: ArtifactError, whose PackError and BundleError name the pack or folder.

How the files travel (a streamed tar, a folder) is each format's own module.
Nothing here imports torch: reading a manifest needs neither torch nor onnx.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2s import __version__

MANIFEST = "MANIFEST.json"
CHUNK = 1 << 20  # bytes hashed at a time


class ArtifactError(ValueError):
    """A pack or bundle that cannot be made or read; the message names it."""


class PackError(ArtifactError):
    """A model pack that cannot be made or read; the message names the file."""


class BundleError(ArtifactError):
    """An ONNX bundle that cannot be written or read; the message names the folder."""


@dataclass(frozen=True)
class Format:
    """One kind of artifact: its manifest's "format" and newest "version", the files its
    manifest must list, the noun its messages use, and its error class."""

    name: str
    version: int
    required: tuple[str, ...]
    noun: str
    error: type[ArtifactError]


PACK = Format(
    "s2s-pack", 1, ("config.yaml", "model_avg.pt", "tokenizer.model", "README.md"), "pack",
    PackError,
)  # fmt: skip
ONNX_GRAPHS = ("encoder.onnx", "decoder_start.onnx", "decoder_step.onnx")
BUNDLE = Format(
    "s2s-onnx", 1, (*ONNX_GRAPHS, "config.yaml", "tokenizer.model"), "bundle", BundleError
)


# --- writing ------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def created() -> str:
    """The manifest's "created": now, in UTC, to the minute."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def make_manifest(fmt: Format, files: dict[str, dict], info: dict) -> dict:
    """The manifest of `fmt` with `info` (experiment, weights, created, ...) and `files`
    (name -> {"bytes", "sha256"}, listed sorted by name)."""
    listed = {name: files[name] for name in sorted(files)}
    return {"format": fmt.name, "version": fmt.version, "s2s": __version__, **info, "files": listed}


def entries_of_bytes(files: dict[str, bytes]) -> dict[str, dict]:
    """name -> {"bytes", "sha256"} of in-memory files."""
    return {n: {"bytes": len(d), "sha256": sha256_bytes(d)} for n, d in files.items()}


def entries_of_folder(folder: Path) -> dict[str, dict]:
    """name -> {"bytes", "sha256"} of every file in `folder` but the manifest."""
    return {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def readme(
    title: str,
    about: str,
    command: str,
    pretrained: str,
    sections: Sequence[tuple[str, str]] = (),
    note: str = "",
) -> str:
    """An artifact's README.md: `# title`, what the model is, the artifact's own `## `
    sections (heading, body), then how to use it: the shell `command` and
    Speech2Text.from_pretrained(`pretrained`), and that the manifest lists every file
    (`note` adds to that sentence)."""
    lines = [f"# {title}", "", about, ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body, ""]
    lines += [
        "## Use",
        "",
        "```sh",
        command,
        "```",
        "",
        "```python",
        "from s2s.decode.inference import Speech2Text",
        f's2t = Speech2Text.from_pretrained("{pretrained}")',
        "```",
        "",
        f"{MANIFEST} lists every file with its SHA-256{note}.",
        "",
    ]
    return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------


def parse_manifest(fmt: Format, text: bytes | str, where: str | Path) -> dict:
    """The checked manifest (check_manifest) in `text`; fmt.error naming `where` when it is
    not JSON."""
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise fmt.error(f"{where}: unreadable {MANIFEST}: {e}") from e
    return check_manifest(fmt, manifest, where)


def check_manifest(fmt: Format, manifest: object, where: str | Path) -> dict:
    """`manifest` if it is one of `fmt` that this s2s reads: the format, a version up to
    fmt.version, every entry a safe plain file name with its bytes and sha256, every required
    file listed. Raises fmt.error naming `where` (the pack or folder)."""
    err = fmt.error
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.name:
        raise err(f"{where}: {MANIFEST} is not an {fmt.name} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > fmt.version:
        raise err(
            f"{where}: {fmt.noun} format version {version!r}: this s2s reads versions up to "
            f"{fmt.version} (a newer {fmt.noun} needs a newer s2s)"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise err(f"{where}: {MANIFEST} lacks its files entry")
    for name, meta in listed.items():
        if "/" in name or name.startswith(".") or name == MANIFEST:
            raise err(f"{where}: {MANIFEST} lists an unsafe file name {name!r}")
        good = isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
        if not good or not isinstance(meta.get("bytes"), int) or meta["bytes"] < 0:
            raise err(f"{where}: {MANIFEST}: entry {name!r} lacks its bytes and sha256")
    unlisted = [n for n in fmt.required if n not in listed]
    if unlisted:
        raise err(f"{where}: {MANIFEST} does not list {', '.join(unlisted)}")
    return manifest


def check_size(fmt: Format, where: str | Path, name: str, size: int, meta: dict) -> None:
    """fmt.error unless a file of `size` bytes is what its manifest entry `meta` lists."""
    if size != meta["bytes"]:
        raise fmt.error(
            f"{where}: {name} differs from its {MANIFEST} entry: {size} bytes, not {meta['bytes']}"
        )


def check_sha256(fmt: Format, where: str | Path, name: str, sha256: str, meta: dict) -> None:
    """fmt.error unless a file's SHA-256 is its manifest entry's."""
    if sha256 != meta["sha256"]:
        raise fmt.error(
            f"{where}: {name} differs from its {MANIFEST} entry (altered or corrupt {fmt.noun})"
        )


def verify_folder(fmt: Format, folder: Path, manifest: dict) -> None:
    """Every file `manifest` lists is in `folder` with its size and SHA-256 (fmt.error naming
    the folder for the first that is not)."""
    for name, meta in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise fmt.error(f"{folder}: {name} is missing")
        check_size(fmt, folder, name, path.stat().st_size, meta)
        check_sha256(fmt, folder, name, sha256_file(path), meta)
