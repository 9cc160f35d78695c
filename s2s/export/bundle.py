"""An ONNX serving bundle: the folder `s2s-export exp/x out/` writes (docs/export.md).

    out/
      encoder.onnx         src, src_lens -> memory, memory_lens
      ctc.onnx             memory -> ctc_log_probs (models trained with CTC only)
      decoder_start.onnx   the decoder's start (cross-attention keys/values, or the prefix's
                           cache slots)
      decoder_step.onnx    one beam-search step over the lean engine's cache
      config.yaml          the experiment config; data.tokenizer / data.cmvn name the copies
      tokenizer.model      the SentencePiece model
      cmvn.pt              global CMVN statistics (speech models trained with them)
      README.md            what the model is and how to decode with it
      MANIFEST.json        format, version, the s2s that exported it, opset and exporter, the
                           model's decoding geometry, and each file's size and SHA-256

The manifest follows s2s-pack's (s2s.pack): one JSON object, "files" listing every other file.
read_bundle checks a folder against it; every way a bundle can be wrong is one BundleError
naming the folder and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from s2s import __version__

FORMAT = "s2s-onnx"
VERSION = 1
MANIFEST = "MANIFEST.json"
GRAPHS = ("encoder.onnx", "decoder_start.onnx", "decoder_step.onnx")
REQUIRED = (*GRAPHS, "config.yaml", "tokenizer.model")
# what the runtime reads from the manifest's "model" entry
MODEL_KEYS = (
    "source", "arrangement", "attention", "stride", "n_layers", "slot_shapes", "vocab_size",
    "min_input_length", "ctc", "cache_bytes_per_token",
)  # fmt: skip


class BundleError(ValueError):
    """A bundle that cannot be written or read; the message names the folder."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_bundle(path: str | Path) -> bool:
    """Whether `path` is a folder with an ONNX bundle's manifest (read_bundle checks it)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_manifest(out: Path, info: dict) -> dict:
    """MANIFEST.json for every file in `out`, with `info` (model, opset, exporter, ...)."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(out.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": FORMAT, "version": VERSION, "s2s": __version__, **info, "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_bundle(path: str | Path) -> dict:
    """The manifest of the bundle at `path`, after checking that it is one this s2s can run:
    its format and version, the s2s that exported it (graphs are only known to match the code
    that made them), every listed file present with its size and SHA-256, nothing required
    missing, and a decoder variant and arrangement this s2s knows. Raises BundleError."""
    from s2s.attention import ATTENTION_REGISTRY
    from s2s.models.decoder import ARRANGEMENTS

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such ONNX bundle (a folder written by s2s-export)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{path}: no {MANIFEST}; not an ONNX bundle (s2s-export writes one)"
        ) from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}/{MANIFEST}: unreadable: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}/{MANIFEST}: not an {FORMAT} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r}; this s2s reads up to {VERSION}"
        )
    if manifest.get("s2s") != __version__:
        raise BundleError(
            f"{path}: exported by s2s {manifest.get('s2s')!r}, this is s2s {__version__}: "
            "export the experiment again with this s2s (s2s-export)"
        )
    files, model = manifest.get("files"), manifest.get("model")
    if not isinstance(files, dict) or not isinstance(model, dict):
        raise BundleError(f"{path}/{MANIFEST}: lacks its files or model entry")
    missing = [k for k in MODEL_KEYS if k not in model]
    if missing:
        raise BundleError(f"{path}/{MANIFEST}: model entry lacks {', '.join(missing)}")
    if model["attention"] not in ATTENTION_REGISTRY:
        raise BundleError(
            f"{path}: decoder attention {model['attention']!r} is not one this s2s knows "
            f"({', '.join(sorted(ATTENTION_REGISTRY))})"
        )
    if model["arrangement"] not in ARRANGEMENTS:
        raise BundleError(f"{path}: decoder arrangement {model['arrangement']!r} unknown")
    need = [*REQUIRED, *(["ctc.onnx"] if model["ctc"] else [])]
    unlisted = [n for n in need if n not in files]
    if unlisted:
        raise BundleError(f"{path}/{MANIFEST}: does not list {', '.join(unlisted)}")
    for name, meta in files.items():
        f = path / name
        if "/" in name or name.startswith("."):
            raise BundleError(f"{path}/{MANIFEST}: unsafe file name {name!r}")
        if not f.is_file():
            raise BundleError(f"{path}: {name} is missing")
        if f.stat().st_size != meta.get("bytes") or sha256_file(f) != meta.get("sha256"):
            raise BundleError(f"{path}: {name} differs from its {MANIFEST} entry (altered?)")
    return manifest
