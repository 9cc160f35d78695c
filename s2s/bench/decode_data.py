"""A trained experiment decoding a data dir, timed: utterances per second as `s2s-decode --data`
decodes them (the same length-sorted batches, encoder included, features read beforehand) and
where the time goes (the encoder, each scorer's steps, the search around them). With
--compare REV, the same batches also go through the beam search of git revision REV, in the
same process, runs alternating, and every n-best list is compared with the current one.

REV's `s2s/decode/beam_search.py`, `ctc_prefix.py`, `scorers.py` and `scorer_set.py` (those
it has) are read with `git show` into a temporary package for this run only; the rest
(models, caches, attention, the compiled step) is the current code. A revision from before
the scorer interface (before `beam_search` took a weighted set) is called the way it was:
decoder, `ctc_log_probs=`, `lm=`.

With --compile, a run "compiled" beside: the current search with `decode.compile` (the
decoder's and the LM's steps compiled, s2s.decode.compiled; its "decoder" seconds are the
compiled step's, log-softmax included). Its compile time (the calls that compiled a graph,
all in the warm-up pass) is reported apart, with the utterances it takes to repay it, and its
n-best lists are compared with the current eager ones.

    python -m s2s.bench.decode_data --model exp/NAME --data data/test [--dump dump/test]
        [--compare REV] [--compile [--compile-buckets 8]] [--repeats 3] [--threads N]
        [--json out.json] [decode.key=value ...]

The decoding settings are the experiment's, then the trailing overrides. The runs search one
encoding per batch: an experiment that decodes with several (`decode.views_merge=scores`)
is timed with `decode.encoder_views=1`, or with `decode.views_merge=encodings`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import torch

from s2s.data.sampler import plan_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s.decode import beam_search as current
from s2s.decode import ctc_prefix
from s2s.decode.compiled import COMPILE_STATS
from s2s.decode.decode_dir import datadir_sources
from s2s.decode.inference import BATCH_FRAMES, MAX_BATCH, Speech2Text
from s2s.decode.scorer_set import search_scorers
from s2s.decode.scorers import DecoderScorer, LMScorer, Weighted
from s2s.threads import torch_threads

REPO = Path(__file__).resolve().parents[2]
REV_MODULES = ("scorers", "scorer_set", "ctc_prefix", "beam_search")


def load_revision(rev: str, into: Path):
    """REV's search modules as a package in `into`, their imports of each other rewritten to
    it; returns (its beam_search module, its ctc_prefix module)."""
    pkg = "_rev_" + re.sub(r"\W", "_", rev)
    (into / pkg).mkdir(parents=True)
    (into / pkg / "__init__.py").write_text("")
    sources = {}
    for name in REV_MODULES:
        got = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:s2s/decode/{name}.py"],
            capture_output=True,
            text=True,
        )
        if got.returncode == 0:
            sources[name] = got.stdout
    if "beam_search" not in sources:
        raise ValueError(f"{rev}: no s2s/decode/beam_search.py at that revision")
    for name, text in sources.items():
        for other in sources:
            text = text.replace(f"s2s.decode.{other} ", f"{pkg}.{other} ")
        (into / pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{pkg}.beam_search"), importlib.import_module(
        f"{pkg}.ctc_prefix"
    )


class _Timed:
    """A decoder or LM whose steps add their seconds to times[name]."""

    def __init__(self, model, name: str, times: dict) -> None:
        self.model, self.name, self.times = model, name, times

    def init_state(self, *args, **kw):
        return self.model.init_state(*args, **kw)

    def step(self, tokens, state):
        t = time.perf_counter()
        out = self.model.step(tokens, state)
        self.times[self.name] += time.perf_counter() - t
        return out


class _TimedScorer:
    """A scorer (s2s.decode.scorers) whose `score` adds its seconds to times[name]."""

    def __init__(self, scorer, name: str, times: dict) -> None:
        self.scorer, self.name, self.times = scorer, name, times
        self.partial, self.fixed_shapes = scorer.partial, scorer.fixed_shapes

    def init_state(self, search):
        return self.scorer.init_state(search)

    def score(self, state, tokens, cand):
        t = time.perf_counter()
        out = self.scorer.score(state, tokens, cand)
        self.times[self.name] += time.perf_counter() - t
        return out

    def select(self, state, rows, cols, tokens) -> None:
        self.scorer.select(state, rows, cols, tokens)

    def peak_cache_bytes(self, state) -> int:
        return self.scorer.peak_cache_bytes(state)

    def keep(self, state, rows):
        return self.scorer.keep(state, rows)


def compiled_searcher(s2t: Speech2Text, times: dict, buckets: int):
    """memory, lens -> n-best lists through the current search with decode.compile on (and
    decode.compile_buckets = buckets); the decoder's and the LM's compiled scores timed into
    `times` (CTC by _timed_ctc)."""
    cfg = replace(s2t.decode_cfg, compile=True, compile_buckets=buckets)
    ctc = ctc_prefix.CTCPrefixScorer(s2t.model.ctc_log_probs, PAD_ID, EOS_ID)
    lm = LMScorer(s2t.lm) if s2t.lm is not None else None
    found = search_scorers(cfg, DecoderScorer(s2t.model.decoder), ctc=ctc, lm=lm)
    timed = {
        name: w if w.scorer.partial else Weighted(_TimedScorer(w.scorer, name, times), w.weight)
        for name, w in found.items()
    }
    return lambda memory, lens: current.beam_search(
        timed, memory, lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID, blank_id=PAD_ID
    )


def _timed_ctc(module, times: dict) -> None:
    """Every CTCPrefixScorer.score of `module` adds its seconds to times["ctc"]."""
    score = module.CTCPrefixScorer.score

    def timed(self, *args, **kw):
        t = time.perf_counter()
        out = score(self, *args, **kw)
        times["ctc"] += time.perf_counter() - t
        return out

    module.CTCPrefixScorer.score = timed


def searcher(s2t: Speech2Text, bs, ctc_module, times: dict):
    """memory, lens -> n-best lists through beam_search module `bs` (its own interface) with
    s2t's model, LM and settings; decoder, LM and CTC steps timed into `times`."""
    cfg = s2t.decode_cfg
    decoder = _Timed(s2t.model.decoder, "decoder", times)
    lm = _Timed(s2t.lm, "lm", times) if s2t.lm is not None else None
    if "scorers" in inspect.signature(bs.beam_search).parameters:
        package = bs.__name__.rsplit(".", 1)[0]
        sc = importlib.import_module(f"{package}.scorers")
        try:
            build = importlib.import_module(f"{package}.scorer_set").search_scorers
        except ModuleNotFoundError:  # a revision before scorer_set.py: scorers held it
            build = sc.search_scorers
        ctc = ctc_module.CTCPrefixScorer(s2t.model.ctc_log_probs, PAD_ID, EOS_ID)
        scorers = build(
            cfg,
            sc.DecoderScorer(decoder),
            ctc=ctc,
            lm=sc.LMScorer(lm) if lm is not None else None,
        )
        return lambda memory, lens: bs.beam_search(
            scorers, memory, lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID, blank_id=PAD_ID
        )

    def before_the_interface(memory, lens):
        ctc = s2t.model.ctc_log_probs(memory) if cfg.ctc_weight > 0 else None
        return bs.beam_search(decoder, memory, lens, cfg, bos_id=BOS_ID, eos_id=EOS_ID,
                              ctc_log_probs=ctc, blank_id=PAD_ID, lm=lm)  # fmt: skip

    return before_the_interface


@torch.no_grad()
def decode_all(s2t: Speech2Text, search, feats: list, plan: list[list[int]], times: dict):
    """Every batch of `plan`: encode, search. Returns the n-best lists as (tokens, score,
    log_prob) tuples in utterance order; adds "encoder" and "total" seconds to times."""
    out: list = [None] * len(feats)
    t0 = time.perf_counter()
    for batch in plan:
        t = time.perf_counter()
        memory, memory_lens = s2t.encode_sources([feats[i] for i in batch])
        times["encoder"] += time.perf_counter() - t
        for i, nbest in zip(batch, search(memory, memory_lens)):
            out[i] = [(h.tokens, h.score, h.log_prob) for h in nbest]
    times["total"] += time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2s.bench.decode_data", description=__doc__)
    p.add_argument("--model", required=True, help="experiment directory")
    p.add_argument("--data", required=True, help="data dir")
    p.add_argument("--dump", help="its feature dump (else features from its audio)")
    p.add_argument("--compare", metavar="REV", help="a git revision's beam search beside")
    p.add_argument("--compile", action="store_true", help="the compiled search beside")
    p.add_argument("--compile-buckets", type=int, default=8, help="decode.compile_buckets")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-frames", type=int, default=BATCH_FRAMES)
    p.add_argument("--json", type=Path)
    p.add_argument("overrides", nargs="*", help="decode settings, decode.key=value")
    args = p.parse_args(argv)
    with torch_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, tmp: Path) -> int:
    from s2s.data.datadir import load_datadir

    s2t = Speech2Text.from_dir(args.model, decode_overrides=args.overrides)
    cfg = s2t.decode_cfg
    if cfg.encoder_views > 1 and cfg.views_merge == "scores":
        print(
            f"decode_data: {args.model} decodes with decode.encoder_views={cfg.encoder_views} "
            "decode.views_merge=scores, a search over several encodings; these runs time one "
            "encoding's: add decode.encoder_views=1 or decode.views_merge=encodings",
            file=sys.stderr,
        )
        return 2
    dd = load_datadir(args.data)
    get, lengths = datadir_sources(s2t, dd, Path(args.dump) if args.dump else None)
    utts = dd.utt_ids
    feats = [get(u) for u in utts]  # read beforehand: the runs time decoding only
    plan = plan_batches(  # as decode_datadir plans
        [lengths[u] for u in utts], args.batch_frames, MAX_BATCH, longest_first=True
    )
    runs = {"current": (current, ctc_prefix)}
    if args.compare:
        runs[args.compare] = load_revision(args.compare, tmp)
    if args.compile:
        runs["compiled"] = (current, ctc_prefix)
    times = {name: defaultdict(list) for name in runs}
    results, warmup, compile_s = {}, {}, 0.0
    for rep in range(args.repeats + 1):  # the first pass warms up (and compiles)
        for name, (bs, ctc_module) in runs.items():
            t: dict = defaultdict(float)
            restore = ctc_module.CTCPrefixScorer.score
            _timed_ctc(ctc_module, t)
            compiled_before = COMPILE_STATS["seconds"]
            try:
                search = (
                    compiled_searcher(s2t, t, args.compile_buckets)
                    if name == "compiled"
                    else searcher(s2t, bs, ctc_module, t)
                )
                results[name] = decode_all(s2t, search, feats, plan, t)
            finally:
                ctc_module.CTCPrefixScorer.score = restore
            if name == "compiled":
                compile_s += COMPILE_STATS["seconds"] - compiled_before
            if rep:
                for k, v in t.items():
                    times[name][k].append(v)
            else:
                warmup[name] = t["total"]
    rows = []
    for name in runs:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        scored = sum(med.get(k, 0.0) for k in ("decoder", "ctc", "lm"))
        rows.append({
            "run": name, "utterances": len(utts), "seconds": med["total"],
            "utterances_per_s": len(utts) / med["total"], "encoder_s": med["encoder"],
            "decoder_s": med.get("decoder", 0.0), "ctc_s": med.get("ctc", 0.0),
            "lm_s": med.get("lm", 0.0), "search_s": med["total"] - med["encoder"] - scored,
            "warmup_s": warmup[name],
        })  # fmt: skip
    report = {
        "model": args.model, "data": args.data, "threads": args.threads,
        "decode": asdict(s2t.decode_cfg), "repeats": args.repeats,
        "rows": rows,
    }  # fmt: skip
    print(
        f"# {args.model} on {args.data}: {len(utts)} utterances, beam "
        f"{s2t.decode_cfg.beam_size}, ctc_weight {s2t.decode_cfg.ctc_weight}, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(
        f"{'run':<14}{'s':>8}{'utt/s':>9}{'encoder':>9}{'decoder':>9}{'ctc':>8}{'lm':>7}"
        f"{'search':>8}"
    )
    for r in rows:
        print(
            f"{r['run']:<14}{r['seconds']:>8.2f}{r['utterances_per_s']:>9.1f}"
            f"{r['encoder_s']:>9.2f}{r['decoder_s']:>9.2f}{r['ctc_s']:>8.2f}{r['lm_s']:>7.2f}"
            f"{r['search_s']:>8.2f}"
        )
    if args.compare:
        report["same"] = _same(results["current"], results[args.compare], utts)
        s = report["same"]
        print(
            f"same best hypothesis: {s['best']}/{len(utts)}, same n-best tokens: "
            f"{s['nbest']}/{len(utts)}, largest score difference {s['max_score_diff']:.2e}"
        )
        if s["differ"]:
            print("differ:", " ".join(s["differ"][:20]))
    if args.compile:
        eager, comp = rows[0], next(r for r in rows if r["run"] == "compiled")
        saved = (eager["seconds"] - comp["seconds"]) / len(utts)
        report["compile_s"] = compile_s
        report["repaid_after_utterances"] = math.ceil(compile_s / saved) if saved > 0 else None
        report["same_compiled"] = s = _same(results["current"], results["compiled"], utts)
        n = report["repaid_after_utterances"]
        print(
            f"compiled: {compile_s:.1f} s compiling (warm-up pass), repaid after "
            f"{'never' if n is None else f'{n} utterances'}; same best hypothesis: "
            f"{s['best']}/{len(utts)}, same n-best tokens: {s['nbest']}/{len(utts)}, largest "
            f"score difference {s['max_score_diff']:.2e}"
        )
        if s["differ"]:
            print("differ:", " ".join(s["differ"][:20]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _same(a: list, b: list, utts: list[str]) -> dict:
    best = sum(x[0][0] == y[0][0] for x, y in zip(a, b))
    nbest = [[h[0] for h in x] == [h[0] for h in y] for x, y in zip(a, b)]
    diffs = [abs(h[1] - g[1]) for x, y, same in zip(a, b, nbest) if same for h, g in zip(x, y)]
    return {
        "best": best,
        "nbest": sum(nbest),
        "max_score_diff": max(diffs, default=0.0),
        "differ": [u for u, same in zip(utts, nbest) if not same],
    }


if __name__ == "__main__":
    raise SystemExit(main())
