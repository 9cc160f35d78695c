"""s2s.evaluate.budget_table: a budget of E epochs averages the best checkpoints of epochs <= E."""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.evaluate.budget_table import average_up_to, epochs_of
from s2s.train.checkpoint import save_checkpoint
from s2s.train.config import TrainConfig


def test_budget_averages_the_best_checkpoints_up_to_its_epoch(tmp_path: Path) -> None:
    accs = {1: 0.1, 2: 0.5, 3: 0.3, 4: 0.9}
    for epoch, acc in accs.items():  # end of epoch: sampler start 0, then one mid-epoch save
        state = {
            "model": {"w": torch.tensor([float(epoch)])},
            "epoch": epoch,
            "sampler": {"start": 0},
            "metrics": {"valid/acc": acc},
        }
        save_checkpoint(tmp_path / "checkpoints", 10 * epoch, state)
    mid = {"model": {"w": torch.tensor([99.0])}, "epoch": 4, "sampler": {"start": 3},
           "metrics": {"valid/acc": 1.0}}  # fmt: skip
    save_checkpoint(tmp_path / "checkpoints", 45, mid)
    epochs = epochs_of(tmp_path)
    assert sorted(epochs) == [1, 2, 3, 4]  # the mid-epoch checkpoint is no epoch's end
    cfg = TrainConfig(best_metric="valid/acc", best_mode="max", n_average=2, keep_best=2)
    for budget, mean in ((3, 2.5), (4, 3.0), (1, 1.0)):
        (tmp_path / f"model_avg_{budget}ep_2.pt").unlink(missing_ok=True)
        out = average_up_to(tmp_path, epochs, budget, cfg)
        assert out.name == f"model_avg_{budget}ep_2.pt"
        assert torch.load(out)["model"]["w"].item() == mean, budget
