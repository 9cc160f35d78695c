"""RESULTS.md: notes written by people, then tables s2s-score keeps up to date.

Everything above MARKER is kept as written (recipe authors put their notes there). Below it:

    ## Environment                one row per (experiment, decoding, test set): date,
                                  versions, commit, device, beam, as when it was scored
    ## Test set: <name>           one table per test set, sorted by name, one row per
                                  experiment and decoding (sorted): the metrics, then speed
                                  and memory

"decode" names a decoding run's settings (e.g. beam5_beam_size2, as its decode dir is named),
so one experiment decoded two ways gets two rows. Re-scoring an experiment's decoding on a set
replaces its rows, so the update is idempotent. The tables are read back from the file itself
(no hidden state): edit above the marker, not below it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

MARKER = "<!-- s2s-score: the tables below are generated; write notes above this line -->"
ENV_HEADING = "## Environment"
SET_HEADING = "## Test set: "
KEY_COLUMNS = ("experiment", "decode")  # what identifies a row of a test set's table
ENV_COLUMNS = [*KEY_COLUMNS, "set", "date", "python", "torch", "s2s", "commit", "device", "beam"]
# efficiency column -> (stats.json key, decimals)
EFFICIENCY_COLUMNS = {
    "utt/s": ("utterances_per_s", 2),
    "tokens/s": ("tokens_per_s", 1),
    "cache bytes/token": ("cache_bytes_per_token", 0),
    "peak cache MiB": ("peak_cache_mib", 2),
    "GPU peak MiB": ("peak_memory_mib", 0),
}
MISSING = "-"
DEFAULT_HEAD = "# Results\n\nNotes on these experiments go here.\n"

Row = dict[str, str]


def _version(dist: str, fallback: str = "n/a") -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def _git_commit(where: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "n/a"


def environment(device: str = "", beam: int | str = "") -> dict[str, str]:
    """Date (UTC), Python, torch and s2s versions, the s2s checkout's git commit, device, beam."""
    import s2s

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": _version("torch"),  # metadata, not import: scoring never needs torch itself
        "s2s": _version("s2s", getattr(s2s, "__version__", "n/a")),
        "commit": _git_commit(Path(s2s.__file__).resolve().parent),
        "device": str(device) or "n/a",
        "beam": str(beam) if beam != "" else MISSING,
    }


def _cell(value: object) -> str:
    """Table-safe text: no newlines, pipes escaped."""
    return str(value).replace("\n", " ").replace("|", "\\|").strip() or MISSING


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def _table(columns: list[str], rows: list[Row], numeric: bool) -> str:
    """A markdown table; numeric: right-align every column but the row's names."""
    align = ["---" if not numeric or c in KEY_COLUMNS else "---:" for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r.get(c, MISSING) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _parse_tables(text: str) -> tuple[list[Row], dict[str, tuple[list[str], list[Row]]]]:
    """The generated part -> (environment rows, set -> (columns, rows))."""
    env: list[Row] = []
    sets: dict[str, tuple[list[str], list[Row]]] = {}
    section: str | None = None
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line.strip(), None
            if section.startswith(SET_HEADING):
                sets.setdefault(section[len(SET_HEADING) :].strip(), ([], []))
            continue
        if not line.strip().startswith("|") or section is None:
            continue
        cells = _split_row(line)
        if header is None:
            header = cells
            if section.startswith(SET_HEADING):
                sets[section[len(SET_HEADING) :].strip()][0].extend(header)
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        row = dict(zip(header, cells))
        if section == ENV_HEADING:
            env.append(row)
        elif section.startswith(SET_HEADING):
            sets[section[len(SET_HEADING) :].strip()][1].append(row)
    return env, sets


def _metric_cell(value: float) -> str:
    return f"{value:.2f}"


def _efficiency_cells(efficiency: dict) -> Row:
    row: Row = {}
    for column, (key, decimals) in EFFICIENCY_COLUMNS.items():
        value = efficiency.get(key)
        row[column] = f"{float(value):.{decimals}f}" if isinstance(value, int | float) else MISSING
    return row


def render_results(head: str, env: list[Row], sets: dict[str, tuple[list[str], list[Row]]]) -> str:
    """The whole file: head, MARKER, the environment table, one table per set (sorted)."""
    parts = [head.rstrip("\n") + "\n", MARKER, ""]
    env_sorted = sorted(env, key=lambda r: (r.get("set", ""), *(r.get(c, "") for c in KEY_COLUMNS)))
    parts += [ENV_HEADING, "", _table(ENV_COLUMNS, env_sorted, numeric=False), ""]
    for name in sorted(sets):
        columns, rows = sets[name]
        rows = sorted(rows, key=lambda r: tuple(r.get(c, "") for c in KEY_COLUMNS))
        # drop metric columns nobody reports any more (a re-score with fewer metrics)
        columns = [
            c
            for c in columns
            if c in KEY_COLUMNS
            or c in EFFICIENCY_COLUMNS
            or any(r.get(c, MISSING) != MISSING for r in rows)
        ]
        parts += [f"{SET_HEADING}{name}", "", _table(columns, rows, numeric=True), ""]
    return "\n".join(parts)


def update_results(
    path: str | Path,
    experiment: str,
    test_set: str,
    metrics: dict[str, float],
    efficiency: dict | None = None,
    env: dict[str, str] | None = None,
    decode: str = "",
) -> str:
    """Add or replace (experiment, decode, test_set) in RESULTS.md at path; returns the new
    text. decode: the decoding settings' name ("" when unknown: "-").

    metrics: score key -> value (2 decimals in the table); efficiency: a decode dir's
    stats.json (utterances_per_s, tokens_per_s, cache_bytes_per_token, peak_memory_mib,
    device, beam_size); env: environment() by default. Text above MARKER is preserved; a file
    without MARKER is kept whole above a new one. Holds an exclusive lock on the file while
    it reads and rewrites it, so concurrent recipes do not lose each other's rows.
    """
    if not experiment.strip() or not test_set.strip():
        raise ValueError(f"{path}: experiment and test set names must be non-empty")
    efficiency = efficiency or {}
    env = env or environment(efficiency.get("device", ""), efficiency.get("beam_size", ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        old = f.read()
        head, sep, generated = old.partition(MARKER)
        if not sep:
            head, generated = (old if old.strip() else DEFAULT_HEAD), ""
        env_rows, sets = _parse_tables(generated)

        key = {"experiment": _cell(experiment), "decode": _cell(decode)}
        name = _cell(test_set)

        def same(r: Row) -> bool:  # rows written before the decode column count as "-"
            return all(r.get(c, MISSING) == v for c, v in key.items())

        env_rows = [r for r in env_rows if not (same(r) and r.get("set") == name)]
        env_rows.append(key | {"set": name} | {k: _cell(v) for k, v in env.items()})
        columns, rows = sets.get(name, ([], []))
        metric_cols = [c for c in columns if c not in KEY_COLUMNS and c not in EFFICIENCY_COLUMNS]
        metric_cols += [_cell(k) for k in metrics if _cell(k) not in metric_cols]
        rows = [r for r in rows if not same(r)]
        rows.append(
            key
            | {_cell(k): _metric_cell(v) for k, v in metrics.items()}
            | _efficiency_cells(efficiency)
        )
        sets[name] = ([*KEY_COLUMNS, *metric_cols, *EFFICIENCY_COLUMNS], rows)

        text = render_results(head, env_rows, sets)
        f.seek(0)
        f.truncate()
        f.write(text)
    return text
