"""`make demo`: the smallest real end-to-end job the project can run on this machine.

Until the embedded speech-translation recipe is wired end to end, the demo runs the attention
micro-benchmark on CPU at a small size and says so: every figure it prints is measured now.
"""

from __future__ import annotations

from s2s.bench.attention import main as bench_main


def main() -> int:
    print("s2s demo: the embedded-corpus recipe is not wired yet; running the decoder")
    print("self-attention micro-benchmark instead (measured now, on this machine).\n")
    return bench_main(["--batch", "4", "--length", "128", "--repeats", "3", "--device", "cpu"])


if __name__ == "__main__":
    raise SystemExit(main())
