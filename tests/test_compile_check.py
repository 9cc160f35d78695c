"""Every kernel configuration the dispatch chooses compiles for sm_80 and sm_90 on this CPU-only
machine, without register spills and within the chips' shared memory (kernels.compile_check).
The paper-sized configurations run by default; the tiny model's are `slow`."""

from __future__ import annotations

import os

import pytest

from kernels import compile_check


def _compiler_present() -> bool:
    try:
        from triton import knobs

        return all(
            os.access(getattr(knobs.nvidia, t).path, os.X_OK) for t in ("ptxas", "cuobjdump")
        )
    except Exception:  # noqa: BLE001 - no NVIDIA backend in this triton: nothing to compile with
        return False


pytestmark = [
    pytest.mark.skipif(not _compiler_present(), reason="triton without its NVIDIA tools"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter set"),
]


def check(size: str, capsys) -> None:
    rc = compile_check.main(["--sizes", size])
    out = capsys.readouterr()
    print(out.out)
    assert rc == 0, out.err


def test_paper_size_kernels_compile_for_sm80_sm90(capsys) -> None:
    check("paper", capsys)


@pytest.mark.slow
def test_tiny_size_kernels_compile_for_sm80_sm90(capsys) -> None:
    check("tiny", capsys)
