"""The real-corpus recipes (MuST-C, LibriSpeech, AMI, SLURP, XSum) through every stage, on
miniature copies of each corpus's published layout fabricated in downloads/ (the fabricators
of tests/helpers.py that test_corpora.py uses), with the tiny model and a few training steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    TRAIN,
    copy_recipe,
    make_ami,
    make_librispeech,
    make_mustc,
    make_slurp,
    make_xsum,
)

from s2s.cli.recipe import main as recipe_main

SPEECH_SHRINK = {"tokenizer": {"vocab_size": 60}, "filter": {"min_frames": 5}}
CASES = {
    "must_c_en_de/st1": (make_mustc, SPEECH_SHRINK, "bleu"),
    "librispeech_100/asr1": (
        make_librispeech,
        SPEECH_SHRINK
        | {
            "prepare_args": {"subsets": ["dev-clean", "test-clean"]},
            "train_set": "dev_clean",
            "valid_set": "test_clean",
            "test_sets": ["test_clean"],
        },
        "wer",
    ),
    "ami/asr1": (make_ami, SPEECH_SHRINK | {"speed_perturb": []}, "wer"),
    "slurp/slu1": (make_slurp, SPEECH_SHRINK, "accuracy"),
    "xsum/sum1": (make_xsum, {"tokenizer": {"vocab_size": 80}}, "rouge1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_recipe_on_a_miniature_corpus(tmp_path: Path, name: str) -> None:
    fabricate, shrink, metric = CASES[name]
    root = copy_recipe(tmp_path, name, shrink)
    fabricate(root / "downloads")
    model = (
        "../../../conf/model/tiny_text.yaml" if "xsum" in name else "../../../conf/model/tiny.yaml"
    )
    args = [
        "--recipe-dir",
        str(root),
        "--attention",
        "mtla",
        "--model_config",
        model,
        "--train_config",
        "../../../conf/train/tiny_cpu.yaml",
        "--nj",
        "1",
    ]
    assert recipe_main([*args, *TRAIN]) == 0
    from s2s.recipe.config import load_recipe_config

    cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    exp = next(p for p in (root / "exp").iterdir() if (p / "config.yaml").is_file())
    assert (exp / "model_avg.pt").is_file()
    results = (root / "RESULTS.md").read_text()
    for test_set in cfg.test_sets:
        score = json.loads(next(exp.glob(f"decode_{test_set}_*/score.json")).read_text())
        assert metric in score["metrics"] and score["n_utterances"] >= 1
        assert f"Test set: {test_set}" in results
    assert exp.name in results
