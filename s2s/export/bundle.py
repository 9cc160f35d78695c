"""The ONNX bundle: the folder s2s-export writes and s2s-decode --backend onnxruntime reads.

    <bundle>/
      encoder.onnx         the encoder (speech frontend or token embedding, then the stack)
      ctc.onnx             the CTC head (speech models trained with CTC only)
      decoder_start.onnx   the decoder's start (cross-attention keys/values, or the prefix's
                           cache slots)
      decoder_step.onnx    one beam-search step over the lean engine's cache
      config.yaml          the experiment config; data.tokenizer / data.cmvn name the copies
      tokenizer.model      the SentencePiece model
      cmvn.pt              global CMVN statistics (speech models trained with them)
      README.md            what the model is and how to decode with it
      MANIFEST.json        format, version, the s2s that exported it, opset and exporter, the
                           model's decoding geometry, and each file's size and SHA-256

The manifest, README layout and checks are s2s.artifact's, shared with s2s-pack. What is a
bundle's own: it is a folder, it runs only on the s2s that exported it, and its manifest's
"model" entry describes the graphs. read_bundle checks a folder; every way a bundle can be
wrong is one BundleError naming the folder and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from s2s import __version__
from s2s.artifact import (
    BUNDLE,
    MANIFEST,
    BundleError,
    entries_of_folder,
    make_manifest,
    manifest_bytes,
    parse_manifest,
    verify_folder,
)

# what the runtime reads from the manifest's "model" entry; besides, "subsampling_factor"
# (the frontend's, for decode.encoder_views), which bundles written before it lack: read as 1
MODEL_KEYS = (
    "source", "arrangement", "attention", "stride", "n_layers", "slot_shapes", "vocab_size",
    "min_input_length", "ctc", "cache_bytes_per_token",
)  # fmt: skip


def is_bundle(path: str | Path) -> bool:
    """Whether `path` is a folder with an ONNX bundle's manifest (read_bundle checks it)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == BUNDLE.name
    except (OSError, ValueError, AttributeError):
        return False


def write_manifest(out: Path, info: dict) -> dict:
    """MANIFEST.json for every file in `out`, with `info` (model, opset, exporter, ...)."""
    manifest = make_manifest(BUNDLE, entries_of_folder(out), info)
    (out / MANIFEST).write_bytes(manifest_bytes(manifest))
    return manifest


def read_bundle(path: str | Path) -> dict:
    """The manifest of the bundle at `path`, after checking that it is one this s2s can run:
    the manifest as s2s.artifact checks every manifest (format, version, entries, required
    files), the s2s that exported it (graphs are only known to match the code that made
    them), a decoder variant and arrangement this s2s knows, and every listed file present
    with its size and SHA-256. Raises BundleError."""
    from s2s.attention import ATTENTION_REGISTRY
    from s2s.models.decoder import ARRANGEMENTS

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such ONNX bundle (a folder written by s2s-export)")
    try:
        text = (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"{path}: no {MANIFEST}; not an ONNX bundle (s2s-export writes one)"
        ) from None
    except OSError as e:
        raise BundleError(f"{path}: unreadable {MANIFEST}: {e}") from e
    manifest = parse_manifest(BUNDLE, text, path)
    if manifest.get("s2s") != __version__:
        raise BundleError(
            f"{path}: exported by s2s {manifest.get('s2s')!r}, this is s2s {__version__}: "
            "export the experiment again with this s2s (s2s-export)"
        )
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise BundleError(f"{path}: {MANIFEST} lacks its model entry")
    missing = [k for k in MODEL_KEYS if k not in model]
    if missing:
        raise BundleError(f"{path}: {MANIFEST}: model entry lacks {', '.join(missing)}")
    if model["attention"] not in ATTENTION_REGISTRY:
        raise BundleError(
            f"{path}: decoder attention {model['attention']!r} is not one this s2s knows "
            f"({', '.join(sorted(ATTENTION_REGISTRY))})"
        )
    if model["arrangement"] not in ARRANGEMENTS:
        raise BundleError(f"{path}: decoder arrangement {model['arrangement']!r} unknown")
    if model["ctc"] and "ctc.onnx" not in manifest["files"]:
        raise BundleError(f"{path}: {MANIFEST} does not list ctc.onnx")
    verify_folder(BUNDLE, path, manifest)
    return manifest
