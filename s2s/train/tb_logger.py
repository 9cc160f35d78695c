"""TensorBoard + text logging for the trainer; silent on every rank but 0."""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger("s2s.train")


class TBLogger:
    """Scalars, images and histograms to exp/<name>/tensorboard/ (tags like "train/loss",
    "valid/acc"; s2s.train.monitor adds the rest).

    enabled=False (ranks other than 0) makes every call a no-op, so callers never branch."""

    def __init__(self, log_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            if v is not None and math.isfinite(float(v)):
                self.writer.add_scalar(tag, float(v), step)

    def image(self, tag: str, img, step: int) -> None:
        """An (H, W, 3) float image in [0, 1] (numpy)."""
        if self.writer is not None:
            self.writer.add_image(tag, img, step, dataformats="HWC")

    def histogram(self, tag: str, values, step: int) -> None:
        if self.writer is not None and len(values):
            self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def setup_text_log(path: str | Path | None, enabled: bool = True) -> None:
    """Send the "s2s" loggers to the console and (rank 0) to `path`, appending, so a resumed
    run continues the same file."""
    root = logging.getLogger("s2s")
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not enabled:
        return
    if not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        for h in root.handlers
    ):
        h = logging.StreamHandler()
        h.setFormatter(fmt)
        root.addHandler(h)
    if path is not None:
        path = Path(path).resolve()
        if not any(
            isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path
            for h in root.handlers
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(path, mode="a")
            fh.setFormatter(fmt)
            root.addHandler(fh)


def format_metrics(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items() if v is not None)
