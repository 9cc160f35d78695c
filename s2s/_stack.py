"""Checks, before anything imports torchaudio, that the installed torch and torchaudio match.

A mismatched pair fails deep inside torchaudio's shared library with an undefined-symbol
linker trace (torchaudio 2.11.1 with torch 2.11.0 does). torchaudio X.Y.Z is built against
torch X.Y.Z only, yet its metadata asks for ``torch>=X.Y``, so pip happily installs a broken
pair into an existing environment; the check compares the release numbers instead.
"""

from __future__ import annotations

from importlib import metadata


class StackMismatchError(ImportError):
    """torch and torchaudio are installed at versions that do not belong together."""


def _release(version: str) -> str:
    """``'2.11.0+cu130'`` -> ``'2.11.0'`` (local tags name the build, not the ABI)."""
    return version.split("+", 1)[0]


def check_torch_stack() -> None:
    """Raise :class:`StackMismatchError` (one line) when torch and torchaudio do not match.

    Reads versions from the installed distributions' metadata, never importing either
    package, so it stays cheap and works even when torchaudio cannot be loaded.
    """
    try:
        torch_version = metadata.version("torch")
        audio_version = metadata.version("torchaudio")
    except metadata.PackageNotFoundError:
        return  # a missing package fails on its own import, with its own clear message
    if _release(torch_version) != _release(audio_version):
        raise StackMismatchError(
            f"s2s: torch {torch_version} and torchaudio {audio_version} do not belong together "
            f"(torchaudio must be built for the same torch release); repair with "
            f"`pip install torchaudio=={_release(torch_version)}`, or run `make test` in a "
            f"clone of s2s for the locked stack"
        )
