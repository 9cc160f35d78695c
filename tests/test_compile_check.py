"""Every kernel configuration the dispatch chooses compiles for sm_80 and sm_90 on this CPU-only
machine, without register spills and within the chips' shared memory (kernels.compile_check).

The default run compiles the paper-sized configurations in float32 and bfloat16 (the dtypes
the decode benchmarks and the GPU check use): ~100 compilations, minutes on 2 cores from an
empty Triton cache. The rest (the tiny model's, and float16, whose code path is bfloat16's)
would double that, so it runs with S2S_COMPILE_ALL=1 (docs/engine.md)."""

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


def check(args: list[str], capsys) -> None:
    rc = compile_check.main(args)
    out = capsys.readouterr()
    print(out.out)
    assert rc == 0, out.err


def test_paper_size_kernels_compile_for_sm80_sm90(capsys) -> None:
    check(["--sizes", "paper", "--dtypes", "float32", "bfloat16"], capsys)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("S2S_COMPILE_ALL") != "1", reason="S2S_COMPILE_ALL=1 compiles the rest"
)
def test_the_other_kernel_configurations_compile_for_sm80_sm90(capsys) -> None:
    check(["--sizes", "tiny", "--dtypes", "float32", "bfloat16", "float16"], capsys)
    check(["--sizes", "paper", "--dtypes", "float16"], capsys)
