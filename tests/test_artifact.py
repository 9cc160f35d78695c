"""s2s.artifact, what packs and ONNX bundles share: one manifest written and checked one way,
one README layout, one error family naming the pack or folder. (test_pack.py and
test_export.py run the two commands end to end.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s2s import __version__
from s2s.artifact import (
    BUNDLE,
    MANIFEST,
    PACK,
    ArtifactError,
    BundleError,
    PackError,
    check_manifest,
    entries_of_bytes,
    entries_of_folder,
    make_manifest,
    manifest_bytes,
    parse_manifest,
    readme,
    verify_folder,
)
from s2s.export import bundle
from s2s.pack import PackError as OldPackError


def test_one_error_family_and_the_old_names() -> None:
    assert issubclass(PackError, ArtifactError) and issubclass(BundleError, ArtifactError)
    assert issubclass(ArtifactError, ValueError)
    assert OldPackError is PackError and bundle.BundleError is BundleError


def _pack_manifest() -> dict:
    files = {n: n.encode() for n in PACK.required}
    return make_manifest(PACK, entries_of_bytes(files), {"experiment": "x"})


def test_manifest_round_trip_and_its_checks() -> None:
    manifest = _pack_manifest()
    assert list(manifest)[:4] == ["format", "version", "s2s", "experiment"]
    assert manifest["s2s"] == __version__ and list(manifest)[-1] == "files"
    assert parse_manifest(PACK, manifest_bytes(manifest), "x.tar.gz") == manifest
    with pytest.raises(BundleError, match=r"^x: MANIFEST.json is not an s2s-onnx manifest"):
        check_manifest(BUNDLE, manifest, "x")
    cases = {
        "version": (99, r"pack format version 99: this s2s reads versions up to 1"),
        "files": ({"../x": {"bytes": 1, "sha256": "0"}}, r"unsafe file name '\.\./x'"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(PackError, match=rf"^p\.tar\.gz: .*{message}"):
            check_manifest(PACK, {**manifest, key: value}, "p.tar.gz")
    del manifest["files"]["README.md"]
    with pytest.raises(PackError, match="does not list README.md"):
        check_manifest(PACK, manifest, "p.tar.gz")
    with pytest.raises(PackError, match="unreadable MANIFEST.json"):
        parse_manifest(PACK, b"{", "p.tar.gz")


def test_a_folder_is_verified_file_by_file(tmp_path: Path) -> None:
    for name in ("a.onnx", "b.yaml"):
        (tmp_path / name).write_text(name)
    files = entries_of_folder(tmp_path)
    manifest = {"files": files}
    verify_folder(BUNDLE, tmp_path, manifest)
    (tmp_path / "a.onnx").write_text("a.onnX")  # same size, other bytes
    with pytest.raises(BundleError, match=rf"{tmp_path}: a.onnx differs .*altered or corrupt"):
        verify_folder(BUNDLE, tmp_path, manifest)
    (tmp_path / "b.yaml").unlink()
    files.pop("a.onnx")
    with pytest.raises(BundleError, match="b.yaml is missing"):
        verify_folder(BUNDLE, tmp_path, manifest)
    (tmp_path / MANIFEST).write_text(json.dumps({}))
    assert MANIFEST not in entries_of_folder(tmp_path)


def test_readme_layout() -> None:
    text = readme("m", "A model.", "s2s-decode --model m.tar.gz a.wav", "m.tar.gz",
                  sections=[("Scores", "| a |")])  # fmt: skip
    assert text == (
        "# m\n\nA model.\n\n## Scores\n\n| a |\n\n## Use\n\n```sh\n"
        "s2s-decode --model m.tar.gz a.wav\n```\n\n```python\n"
        "from s2s.decode.inference import Speech2Text\n"
        's2t = Speech2Text.from_pretrained("m.tar.gz")\n```\n\n'
        "MANIFEST.json lists every file with its SHA-256.\n"
    )
