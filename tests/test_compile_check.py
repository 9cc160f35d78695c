"""Every kernel configuration the dispatch chooses compiles for sm_80 and sm_90 on this CPU-only
machine, without register spills and within the chips' shared memory (kernels.compile_check).

The default run compiles the paper-sized configurations in float32 and bfloat16 (the dtypes
the decode benchmarks and the GPU check use): ~100 compilations, minutes on 2 cores from an
empty Triton cache. The rest (the tiny model's, and float16, whose code path is bfloat16's)
would double that, so it runs with S2S_COMPILE_ALL=1 (docs/engine.md)."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest

from kernels import compile_check

#: the paper-sized configurations in float32 and bfloat16 (docs/engine.md's table: 19 + 27
#: rows), each compiled once for sm_80 and once for sm_90
PAPER_ROWS = 46


def _compiler_present() -> bool:
    """Whether this triton carries its NVIDIA tools. A triton without them says "Cannot find
    ptxas" (a RuntimeError): that, and only that, skips; a triton whose knobs moved fails the
    file loudly instead of skipping every compilation in silence."""
    from triton import knobs

    try:
        tools = [knobs.nvidia.ptxas, knobs.nvidia.cuobjdump]
    except RuntimeError as e:
        if str(e).startswith("Cannot find"):
            return False
        raise
    return all(os.access(t.path, os.X_OK) for t in tools)


needs_tools = pytest.mark.skipif(not _compiler_present(), reason="triton without NVIDIA tools")
not_interpreted = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter compiles nothing"
)


def check(args: list[str], capsys) -> tuple[int, int]:
    """Run the check; (compilations, rows) it reports."""
    rc = compile_check.main(args)
    out = capsys.readouterr()
    print(out.out)
    assert rc == 0, out.err
    n, rows = re.search(r"^(\d+) compilations, (\d+) rows", out.out, re.M).groups()
    return int(n), int(rows)


def test_compiler_probe_skips_only_for_missing_tools(monkeypatch) -> None:
    from triton import knobs

    class Missing:
        @property
        def ptxas(self):
            raise RuntimeError("Cannot find ptxas")

    monkeypatch.setattr(knobs, "nvidia", Missing())
    assert _compiler_present() is False
    monkeypatch.setattr(knobs, "nvidia", SimpleNamespace())  # an upgrade renamed the knobs
    with pytest.raises(AttributeError, match="ptxas"):
        _compiler_present()


@not_interpreted
def test_nothing_recorded_is_a_failure(monkeypatch, capsys) -> None:
    """Negative control: a dispatch that never reaches the kernels records no launch, and the
    check fails rather than passing on zero compilations."""
    from s2s.attention import ops

    monkeypatch.setattr(ops, "kernels_active", lambda t: False)
    assert compile_check.main(["--sizes", "paper", "--dtypes", "float32"]) == 1
    assert "no kernel configuration recorded" in capsys.readouterr().err


@needs_tools
@not_interpreted
def test_paper_size_kernels_compile_for_sm80_sm90(capsys) -> None:
    n, rows = check(["--sizes", "paper", "--dtypes", "float32", "bfloat16"], capsys)
    assert (n, rows) == (2 * PAPER_ROWS, PAPER_ROWS)


@needs_tools
@not_interpreted
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("S2S_COMPILE_ALL") != "1", reason="S2S_COMPILE_ALL=1 compiles the rest"
)
def test_the_other_kernel_configurations_compile_for_sm80_sm90(capsys) -> None:
    check(["--sizes", "tiny", "--dtypes", "float32", "bfloat16", "float16"], capsys)
    check(["--sizes", "paper", "--dtypes", "float16"], capsys)
