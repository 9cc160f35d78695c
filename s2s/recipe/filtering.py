"""Stage 4: drop utterances a model cannot learn from (empty targets, too few or too many
frames, over-long texts) and say which and why."""

from __future__ import annotations

import logging
from pathlib import Path

from s2s.data.datadir import load_datadir, subset_datadir
from s2s.recipe.config import RecipeConfig

log = logging.getLogger(__name__)


def filter_set(
    src_dir: Path, dst_dir: Path, dump_dir: Path | None, cfg: RecipeConfig, keep_all: bool
) -> list[tuple[str, str]]:
    """Write dst_dir with the kept utterances; returns (utt, reason) for each dropped one and
    writes them to dst_dir/dropped. keep_all (test sets): keep everything but the utterances
    stage 3 left out for bad audio (dump_dir/bad_utts), which have no features."""
    dd = load_datadir(src_dir)
    frames, bad_audio = None, {}
    if dump_dir is not None:
        from s2s.data.features import BAD_UTTS, FeatureReader

        frames = FeatureReader(dump_dir)
        if (dump_dir / BAD_UTTS).is_file():  # `<utt> <path> <reason>` lines
            lines = (dump_dir / BAD_UTTS).read_text().splitlines()
            bad_audio = {u: why for u, _, why in (line.split(" ", 2) for line in lines)}
    f = cfg.filter
    dropped: list[tuple[str, str]] = []
    keep = []
    for utt in dd.utt_ids:
        reason = f"bad audio: {bad_audio[utt]}" if utt in bad_audio else ""
        if not reason and not keep_all:
            target = dd.texts[cfg.target_field][utt].strip()
            if not target:
                reason = "empty target"
            elif len(target) > f.max_chars:
                reason = f"target longer than {f.max_chars} characters"
            elif frames is not None:
                if utt not in frames:
                    reason = "no features"
                else:
                    n = frames.num_frames(utt)
                    if n < f.min_frames:
                        reason = f"{n} frames < {f.min_frames}"
                    elif n > f.max_frames:
                        reason = f"{n} frames > {f.max_frames}"
        if reason:
            dropped.append((utt, reason))
        else:
            keep.append(utt)
    if not keep:
        raise ValueError(f"{src_dir}: filtering left no utterances ({len(dropped)} dropped)")
    subset_datadir(dd, dst_dir, keep)
    Path(dst_dir, "dropped").write_text("".join(f"{u} {r}\n" for u, r in dropped))
    log.info(
        "%s: kept %d, dropped %d (see %s/dropped)", src_dir.name, len(keep), len(dropped), dst_dir
    )
    return dropped
