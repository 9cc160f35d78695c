"""The embedded recipes through every stage (0-10) with minimal settings, and the demo table.

Each recipe is copied with the repository's conf/ into a temporary tree of the same shape
(<tmp>/conf, <tmp>/recipes/<corpus>/<task>1), shrunk (a few utterances, a few training steps)
and run through s2s.cli.recipe, the engine behind run.sh.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import BAD_AUDIO, REPO, SENTENCES, TRAIN, copy_recipe, write_audio, write_bad_audio
from omegaconf import OmegaConf

from s2s.cli.decode import main as decode_main
from s2s.cli.recipe import main as recipe_main
from s2s.data.datadir import write_datadir
from s2s.decode.inference import Speech2Text
from s2s.demo import MARKER, claim_experiment, format_table
from s2s.demo import main as demo_main
from s2s.threads import threads_per_job, usable_cores


def model_exp(root: Path) -> Path:
    """The recipe's one model experiment (asr1 also has its language model's, exp/lm_*)."""
    exps = [p for p in (root / "exp").iterdir() if (p / "config.yaml").is_file()]
    exps = [p for p in exps if not p.name.startswith("lm_")]
    assert len(exps) == 1, exps
    return exps[0]


def check_experiment(root: Path, n_test: int, metric: str) -> dict:
    exp = model_exp(root)
    assert (exp / "model_avg.pt").is_file()
    assert any((exp / "checkpoints").iterdir())
    assert any((exp / "tensorboard").rglob("events.out.tfevents.*"))
    decode = next(exp.glob("decode_test_*"))
    hyps = (decode / "hyp.txt").read_text().splitlines()
    assert len(hyps) == n_test == len((decode / "ref.txt").read_text().splitlines())
    score = json.loads((decode / "score.json").read_text())
    assert metric in score["metrics"]
    assert score["efficiency"]["utterances_per_s"] > 0
    results = (root / "RESULTS.md").read_text()
    assert exp.name in results
    return score


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, list[str]]]:
    """run(task) -> (recipe dir, run.sh flags): the phrases recipe for `task` ("st1", "asr1")
    through every stage with the TRAIN settings, run once per module and shared by its tests."""
    runs: dict[str, tuple[Path, list[str]]] = {}

    def run(task: str) -> tuple[Path, list[str]]:
        if task not in runs:
            shrink = {
                "prepare_args": {"n_train": 24, "n_dev": 4, "n_test": 4},
                "tokenizer": {"vocab_size": 80},
                "speed_perturb": [0.9],
                "lm_overrides": [o for o in TRAIN if o.startswith("train.")],
            }
            if task == "st1":  # with the source CTC of speech translation (the recipe's is off)
                own = OmegaConf.load(REPO / "recipes" / "phrases" / "st1" / "conf" / "recipe.yaml")
                shrink["src_ctc_field"] = "text.en"
                shrink["overrides"] = [*own.overrides, "model.src_ctc_weight=0.3"]
            root = copy_recipe(tmp_path_factory.mktemp(task), f"phrases/{task}", shrink)
            args = ["--recipe-dir", str(root), "--nj", "2", "--attention", "mtla", "--stride", "2"]
            assert recipe_main([*args, *TRAIN]) == 0
            runs[task] = root, args
        return runs[task]

    return run


@pytest.mark.parametrize("task, metric", [("st1", "bleu"), ("asr1", "wer")])
def test_phrases_recipe_all_stages(phrases, task: str, metric: str) -> None:
    root, args = phrases(task)
    assert (root / "data" / "train_sp" / "wav.scp").is_file()  # stage 2 ran
    assert (root / "dump" / "train_sp" / "cmvn.pt").is_file()  # stage 6 ran
    check_experiment(root, 4, metric)
    if task == "st1":  # the source CTC: a joint tokenizer, the English read by the encoder
        from s2s.data.tokenizer import Tokenizer

        (tok,) = (root / "data" / "token").glob("*.model")
        assert tok.name == "unigram80_text.de+text.en.model"
        exp = model_exp(root)
        cfg = OmegaConf.load(exp / "config.yaml")
        assert (cfg.data.src_ctc_field, cfg.model.src_ctc_weight) == ("text.en", 0.3)
        log = (exp / "logs" / "trainer.log").read_text()
        assert "train/loss_src_ctc=" in log, log
        english = Tokenizer.from_file(str(tok)).encode("there is a red ball under the bed")
        assert Tokenizer.from_file(str(tok)).unk_id not in english
    # A stage re-runs alone: scoring again replaces the row instead of adding one.
    before = (root / "RESULTS.md").read_text()
    assert recipe_main([*args, "--stage", "10", *TRAIN]) == 0
    assert (root / "RESULTS.md").read_text().count("mtla") == before.count("mtla")


def test_command_line_decode_settings_get_their_own_folder_and_row(phrases) -> None:
    """Stages 9-10 again with decode.beam_size=3 decode with it into a second folder named
    after the settings that differ from conf/decode/beam5.yaml, and RESULTS.md gets a second
    row. Settings: config.yaml (recipe.yaml's decode.ctc_weight=0.3, TRAIN's beam 2 and
    max_len_b 8), then beam5.yaml (beam 5, max_len_b 10), then the command line."""
    root, args = phrases("asr1")
    exp = model_exp(root)
    assert recipe_main([*args, "--stage", "9", "--stop_stage", "10", "decode.beam_size=3"]) == 0
    runs = {  # decode name -> (beam, max_len_b)
        "beam5_beam_size2_max_len_b8_ctc_weight0.3": (2, 8),  # the first run's TRAIN settings
        "beam5_beam_size3_ctc_weight0.3": (3, 10),  # beam5.yaml's max_len_b beats config.yaml's
    }
    assert sorted(p.name for p in exp.glob("decode_*")) == [f"decode_test_{n}" for n in runs]
    for name, (beam, max_len_b) in runs.items():
        d = exp / f"decode_test_{name}"
        held = OmegaConf.load(d / "decode.yaml").decode
        assert (held.beam_size, held.max_len_b, held.ctc_weight) == (beam, max_len_b, 0.3)
        assert json.loads((d / "stats.json").read_text())["beam_size"] == beam
        assert "wer" in json.loads((d / "score.json").read_text())["metrics"]
    table = (root / "RESULTS.md").read_text().split("## Test set: test\n", 1)[1]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith(f"| {exp.name} ")]
    assert [r[1] for r in rows] == list(runs)


def test_stage9_decodes_in_nj_shards_as_one_process_does(phrases) -> None:
    """The module's runs pass --nj 2: stage 9 decoded the test set in two shards (their logs,
    split2/1 and split2/2) merged in the data dir's order; stage 9 again with --nj 1 (one
    process, both cores) writes the same hypotheses."""
    root, args = phrases("st1")
    exp = model_exp(root)
    (decode,) = exp.glob("decode_test_*")
    assert [p.name for p in sorted((decode / "split2").iterdir())] == ["1", "2"]
    assert (exp / "logs" / f"{decode.name}.2.log").is_file()
    sharded = {n: (decode / n).read_text() for n in ("hyp.txt", "ref.txt")}
    assert json.loads((decode / "stats.json").read_text())["shards"] == 2
    one = [*args[: args.index("--nj")], "--nj", "1", *args[args.index("--nj") + 2 :]]
    assert recipe_main([*one, "--stage", "9", "--stop_stage", "9", *TRAIN]) == 0
    assert {n: (decode / n).read_text() for n in sharded} == sharded
    assert "shards" not in json.loads((decode / "stats.json").read_text())


def test_experiment_dir_decodes_after_a_copy_without_the_original(
    phrases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cp -r exp/<name> elsewhere, move the original tree away (recipe, data, dumps, token):
    the copy decodes through s2s-decode --model and Speech2Text.from_dir, with its own
    tokenizer and CMVN stats."""
    root, _ = phrases("asr1")
    capsys.readouterr()  # the recipe's console output, when this test is the first to run it
    exp = model_exp(root)
    saved = OmegaConf.load(exp / "config.yaml").data
    assert (saved.tokenizer, saved.cmvn) == ("tokenizer.model", "cmvn.pt")
    wav = tmp_path / "utt.wav"
    shutil.copyfile(next((root / "data" / "wav" / "test").glob("*.wav")), wav)
    copy = tmp_path / "elsewhere" / exp.name
    shutil.copytree(exp, copy)
    tree = root.parents[2]  # <tmp>/{conf,recipes}: everything the recipe made or read
    moved = tree.with_name(tree.name + ".moved")
    tree.rename(moved)
    try:
        assert decode_main(["--model", str(copy), str(wav)]) == 0
        name, text = capsys.readouterr().out.rstrip("\n").split("\t")
        assert name == str(wav) and text
        s2t = Speech2Text.from_dir(copy)
        assert s2t.cmvn is not None and s2t.cfg.data.cmvn == str(copy / "cmvn.pt")
        assert s2t(wav)[0].text == text
    finally:
        moved.rename(tree)


def test_docstrings_recipe_all_stages(tmp_path: Path) -> None:
    root = copy_recipe(tmp_path, "docstrings/sum1", {"tokenizer": {"vocab_size": 300}})
    args = ["--recipe-dir", str(root), "--attention", "mla", "--arrangement", "cross"]
    assert recipe_main([*args, *TRAIN, "data.max_frames=3000"]) == 0
    n_test = len((root / "data" / "test_filt" / "utt2spk").read_text().splitlines())
    check_experiment(root, n_test, "rouge1")


def test_run_sh_drives_the_stage_engine(tmp_path: Path) -> None:
    root = copy_recipe(tmp_path, "docstrings/sum1", {})
    env = {**os.environ, "S2S_PYTHON": sys.executable}
    done = subprocess.run(
        [str(root / "run.sh"), "--stage", "0", "--stop_stage", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to download" in done.stderr
    bad = subprocess.run(
        [str(root / "run.sh"), "--stage", "x"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "--stage" in bad.stderr


def test_recipe_rejects_bad_flags(tmp_path: Path) -> None:
    root = copy_recipe(tmp_path, "phrases/st1", {})
    with pytest.raises(SystemExit) as e:
        recipe_main(["--recipe-dir", str(root), "--attention", "nope"])
    assert e.value.code == 2  # argparse's usage error
    (root / "conf" / "recipe.yaml").write_text("corpus: phrases.prepare\ntask: st\ntypo_key: 1\n")
    assert recipe_main(["--recipe-dir", str(root)]) == 2


def test_every_registered_variant_is_a_recipe_flag() -> None:
    """run.sh --attention NAME accepts every registered variant and builds it in stage 7's
    experiment config (conf/attention/NAME.yaml)."""
    from s2s.attention import ATTENTION_REGISTRY, VARIANTS
    from s2s.cli.recipe import build_parser
    from s2s.models.decoder import Decoder
    from s2s.recipe.config import load_recipe_config
    from s2s.recipe.stages import Recipe, RunOptions

    root = REPO / "recipes" / "phrases" / "st1"
    cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    for name in VARIANTS:
        assert build_parser().parse_args(["--attention", name]).attention == name
        dec_cfg = Recipe(cfg, RunOptions(recipe_dir=root, attention=name)).experiment_config()
        dec_cfg = dec_cfg.model.decoder
        dec = Decoder(dec_cfg, vocab_size=11, memory_dim=dec_cfg.d_model)
        assert type(dec.layers[0].self_attn) is ATTENTION_REGISTRY[name]


def test_command_line_beats_recipe_overrides() -> None:
    """recipe.yaml's overrides are defaults: --arrangement/--stride and key=value win."""
    from s2s.recipe.config import load_recipe_config
    from s2s.recipe.stages import Recipe, RunOptions

    root = REPO / "recipes" / "phrases" / "st1"
    cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    assert "model.decoder.arrangement=cross" in cfg.overrides
    assert (
        Recipe(cfg, RunOptions(recipe_dir=root)).experiment_config().model.decoder.arrangement
        == "cross"
    )
    opts = RunOptions(
        recipe_dir=root,
        attention="mtla",
        stride=3,
        arrangement="prefix",
        overrides=["model.ctc_weight=0.5"],
    )
    exp = Recipe(cfg, opts).experiment_config()
    assert exp.model.decoder.arrangement == "prefix"
    assert exp.model.decoder.self_attention().stride == 3
    assert exp.model.ctc_weight == 0.5  # recipe.yaml says 0.3
    assert Recipe(cfg, opts).exp_name == "tiny_mtla_s3_prefix"


def test_config_file_beats_recipe_overrides_and_key_values_beat_it(tmp_path: Path) -> None:
    """--config (st1's authors_prefix.yaml) lands after recipe.yaml's overrides and before
    key=value; the recipe's metrics reach the training monitor; a bad file names itself."""
    from s2s.recipe.config import load_recipe_config
    from s2s.recipe.stages import Recipe, RunOptions

    root = REPO / "recipes" / "phrases" / "st1"
    cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    opts = RunOptions(
        recipe_dir=root,
        attention="mtla",
        configs=["conf/authors_prefix.yaml"],
        overrides=["train.lr=1e-3"],
    )
    exp = Recipe(cfg, opts).experiment_config()
    assert exp.model.decoder.arrangement == "prefix"  # recipe.yaml says cross
    assert exp.model.decoder.dropout == 0.15  # recipe.yaml says 0.0
    assert exp.model.decoder.attention["dropout"] == 0.15
    assert exp.model.decoder.self_attention().stride == 2  # conf/attention/mtla.yaml kept
    assert (exp.train.best_metric, exp.train.n_average) == ("valid/acc", 10)
    assert exp.train.lr == 1e-3  # the command line beats the file (2e-3)
    assert exp.train.monitor.metrics == ["bleu", "chrf", "wer"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 1\n")
    opts = RunOptions(recipe_dir=root, configs=[str(bad)])
    with pytest.raises(ValueError, match="lrr"):
        Recipe(cfg, opts).experiment_config()
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Recipe(cfg, RunOptions(recipe_dir=root, configs=["missing.yaml"])).experiment_config()


def test_demo_table_formats_measured_values() -> None:
    score = {
        "metrics": {"bleu": 41.23, "chrf": 60.0, "wer": 20.5},
        "efficiency": {
            "utterances_per_s": 12.3,
            "cache_bytes_per_token": 1536,
            "peak_cache_mib": 12.345,
        },
    }
    table = format_table({"mha": score, "mtla": {"metrics": {}}}, {"mha": 120.0})
    lines = table.splitlines()
    assert lines[0].startswith("| attention | BLEU")
    assert "| mha | 41.2 | 60.0 | 20.5 | 12.3 | 1536 | 12.35 | 2.0 |" in lines
    assert lines[-1].startswith("| mtla | n/a")


def test_demo_trains_variants_side_by_side_then_decodes_each_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """`python -m s2s.demo` end to end on the recipe shrunk: the data stages once, two
    variants' trainings side by side in threads (their commands given the cores shared out,
    their console lines labelled, each stage log holding its own run's lines only), then each
    decoded and scored, and one table row per variant from its score.json."""
    shrink = {
        "prepare_args": {"n_train": 24, "n_dev": 4, "n_test": 4},
        "tokenizer": {"vocab_size": 80},
    }
    root = copy_recipe(tmp_path, "phrases/st1", shrink)
    caplog.set_level(logging.INFO)  # the stage logs take the INFO records
    argv = ["--recipe", str(root), "--variants", "mha,mla", "--jobs", "2", "--nj", "2", *TRAIN]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    threads = threads_per_job(2, usable_cores())
    exps = {
        "mha": root / "exp" / "tiny_mha_cross_demo",
        "mla": root / "exp" / "tiny_mla_cross_demo",
    }
    for variant, exp in exps.items():
        other = next(e for v, e in exps.items() if v != variant)
        score = json.loads(next(exp.glob("decode_test_*/score.json")).read_text())
        assert f"| {variant} | {score['metrics']['bleu']:.1f} | " in out
        assert f"[{variant}] " in out  # its training's console lines, labelled
        trainer_log = (exp / "logs" / "trainer.log").read_text()
        assert f"world size 1; {threads} CPU threads" in trainer_log
        for n in (7, 8, 9, 10):
            stage_log = (exp / "logs" / f"stage{n}.log").read_text()
            assert str(exp) in stage_log and other.name not in stage_log, (n, stage_log)
    assert "2 side by side" in out


def test_demo_refuses_experiment_dirs_it_did_not_create(tmp_path: Path) -> None:
    """`make demo` (python -m s2s.demo) uses exp/<name>_demo; an experiment of that name that
    the demo did not mark is refused before any work, and the user's untagged one is never
    touched."""
    root = copy_recipe(tmp_path, "phrases/st1", {})
    user = root / "exp" / "tiny_mtla_s2_cross"  # what the demo's mtla run was named before
    theirs = root / "exp" / "tiny_mtla_s2_cross_demo"
    for d in (user, theirs):
        d.mkdir(parents=True)
        (d / "model_avg.pt").write_text("a user's model")
    assert demo_main(["--recipe", str(root), "--variants", "mtla"]) == 1
    for d in (user, theirs):
        assert (d / "model_avg.pt").read_text() == "a user's model"
    assert not (root / "data").exists()  # refused before the data stages


def test_demo_replaces_only_its_own_marked_runs(tmp_path: Path) -> None:
    exp = tmp_path / "exp" / "tiny_mha_cross_demo"
    claim_experiment(exp)
    assert (exp / MARKER).is_file()
    (exp / "checkpoints").mkdir()
    claim_experiment(exp, fresh=False)  # the data stages' dir: kept as it is
    assert (exp / "checkpoints").is_dir()
    claim_experiment(exp)  # a new demo run starts from scratch
    assert sorted(p.name for p in exp.iterdir()) == [MARKER]
    (exp / MARKER).unlink()
    with pytest.raises(RuntimeError, match="not created by the demo"):
        claim_experiment(exp)
    assert exp.is_dir()


@pytest.mark.parametrize(
    "name",
    sorted(
        str(p.parent.parent.relative_to(REPO / "recipes"))
        for p in (REPO / "recipes").glob("*/*/conf/recipe.yaml")
    ),
)
@pytest.mark.parametrize("attention", ["mha", "mla", "mtla"])
def test_every_recipe_config_resolves(name: str, attention: str) -> None:
    """Every recipe's YAML, with each attention variant, validates as an experiment config and
    names a corpus module whose prepare() exists (no data needed)."""
    from s2s.recipe.config import load_recipe_config
    from s2s.recipe.stages import Recipe, RunOptions

    root = REPO / "recipes" / name
    assert (root / "run.sh").stat().st_mode & 0o111, f"{name}/run.sh is not executable"
    cfg = load_recipe_config(root / "conf" / "recipe.yaml")
    recipe = Recipe(cfg, RunOptions(recipe_dir=root, attention=attention))
    exp = recipe.experiment_config()
    assert exp.model.decoder.self_attention().type == attention
    assert exp.data.target_field == cfg.target_field
    assert callable(recipe._corpus().prepare)
    assert recipe.exp_name.startswith(f"{recipe.model_config.stem}_{attention}")


def test_asr_recipe_trains_an_lm_and_fuses_it(phrases) -> None:
    """asr1's stage 7 trained the LM of recipe.yaml's lm_config (exp/lm_tiny_mtla_s2, averaged);
    decode.lm_weight=0.3 on the command line fuses it: its own decode dir named after the LM
    and the weight, a RESULTS.md row, and the LM recorded in decode.yaml."""
    root, args = phrases("asr1")
    lm = root / "exp" / "lm_tiny_mtla_s2"
    assert (lm / "model_avg.pt").is_file()
    assert OmegaConf.load(lm / "config.yaml").lm.attention.type == "mtla"
    exp = model_exp(root)
    assert recipe_main([*args, "--stage", "9", "--stop_stage", "10", "decode.lm_weight=0.3"]) == 0
    name = "beam5_ctc_weight0.3_lmlm_tiny_mtla_s2_lm_weight0.3"  # beam5.yaml beats config.yaml
    d = exp / f"decode_test_{name}"
    try:
        held = OmegaConf.load(d / "decode.yaml").decode
        assert (held.lm, held.lm_weight) == (str(lm), 0.3)
        assert "wer" in json.loads((d / "score.json").read_text())["metrics"]
        assert f"| {exp.name} | {name} |" in (root / "RESULTS.md").read_text()
    finally:  # leave the shared recipe as the other tests expect it
        shutil.rmtree(d)


def test_st_recipe_starts_from_the_asr_encoder(phrases, caplog: pytest.LogCaptureFixture) -> None:
    """st1 --init_param <asr1 experiment>:encoder:encoder trains exp/<name>_init from the ASR
    encoder (the log lists every key loaded and left); a missing ASR experiment is an error
    that names the asr1 command producing it."""
    asr_root, _ = phrases("asr1")
    root, args = phrases("st1")
    asr_exp = model_exp(asr_root)
    exp = root / "exp" / f"{asr_exp.name}_init"
    try:
        missing = f"{asr_root}/exp/tiny_mha_cross:encoder:encoder"
        assert (
            recipe_main([*args, "--stage", "7", "--stop_stage", "7", "--init_param", missing]) == 1
        )
        flags = "--stage 1 --stop_stage 8 --attention mha --arrangement cross"
        want = f"cd {asr_root} && ./run.sh {flags}"
        assert want in caplog.text
        spec = f"{asr_exp}:encoder:encoder"
        assert (
            recipe_main([*args, "--stage", "7", "--stop_stage", "7", "--init_param", spec, *TRAIN])
            == 0
        )
        log = (exp / "logs" / "trainer.log").read_text()
        assert f"init_param: encoder.frontend.conv.0.weight <- {asr_exp}/model_avg.pt" in log
        assert "init_param: decoder.embed.weight left as initialised" in log
        held = OmegaConf.load(exp / "config.yaml").train.init_param
        assert held == [f"{asr_exp}:encoder:encoder"]
    finally:
        shutil.rmtree(exp, ignore_errors=True)


def _speech_set(root: Path, name: str, n: int, bad: dict[str, Path] | None = None) -> None:
    """data/<name> of the phrases st1 recipe written by hand (stage 1 synthesises speech, which
    takes minutes): n noise utterances of 0.4-0.9 s with SENTENCES as transcripts, plus one
    utterance per `bad` audio path."""
    wav_scp, texts = {}, {"text": {}, "text.de": {}}
    utts = {f"spk-{name}{i:02d}": root / "wav" / f"{name}{i:02d}.wav" for i in range(n)}
    for i, path in enumerate(utts.values()):
        write_audio(path, 0.4 + 0.05 * (i % 11), seed=i)
    utts |= {f"spk-{name}-bad-{kind}": path for kind, path in (bad or {}).items()}
    for i, (utt, path) in enumerate(sorted(utts.items())):
        wav_scp[utt] = str(path)
        texts["text"][utt] = texts["text.de"][utt] = SENTENCES[i % len(SENTENCES)]
    write_datadir(root / "data" / name, wav_scp, texts, {u: "spk" for u in wav_scp})


@pytest.mark.slow  # about 40 s on 2 busy cores: stage 7 trains in a subprocess
def test_bad_audio_is_listed_in_one_run_then_skipped_on_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four bad audio files in the training set (a corrupt RIFF header, a text file named .wav,
    30 ms of audio, a missing path): stage 3 lists all four and stops; with
    --skip_bad_audio true it dumps the rest, lists the four in dump/train/bad_utts, stage 4
    drops them and training runs."""
    shrink = {"tokenizer": {"vocab_size": 48}, "lm_overrides": []}
    root = copy_recipe(tmp_path, "phrases/st1", shrink)
    bad = write_bad_audio(root / "bad")
    _speech_set(root, "train", 12, bad)
    _speech_set(root, "dev", 2)
    _speech_set(root, "test", 2)
    args = ["--recipe-dir", str(root), "--attention", "mha", "--stage", "3"]
    with caplog.at_level("INFO"):
        assert recipe_main([*args, "--stop_stage", "3"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for kind, (_, why) in BAD_AUDIO.items():
        line = f"data/train: utterance 'spk-train-bad-{kind}' ({bad[kind]}): "
        assert sum(e.startswith(line) and bool(re.search(why, e)) for e in errors) == 1, errors
    assert "data/train: 4 utterances with unusable audio" in errors
    assert "stage 3: 4 utterances" in errors[-1] and "--skip_bad_audio true" in errors[-1]
    assert not (root / "dump" / "train" / "feats.index").exists()

    caplog.clear()
    with caplog.at_level("INFO"):
        assert recipe_main([*args, "--stop_stage", "7", "--skip_bad_audio", "true", *TRAIN]) == 0
    listed = (root / "dump" / "train" / "bad_utts").read_text().splitlines()
    assert [line.split(" ", 2)[:2] for line in listed] == sorted(
        [f"spk-train-bad-{kind}", str(path)] for kind, path in bad.items()
    )
    assert all(re.search(BAD_AUDIO[line.split()[0].rsplit("-", 1)[1]][1], line) for line in listed)
    stage3 = (model_exp(root) / "logs" / "stage3.log").read_text()
    assert "data/train: skipped 4 bad utterances" in stage3
    kept = (root / "data" / "train_filt" / "utt2spk").read_text()
    assert kept.count("\n") == 12 and "bad" not in kept
    assert "bad audio: " in (root / "data" / "train_filt" / "dropped").read_text()
    assert any((model_exp(root) / "checkpoints").iterdir())  # stage 7 trained on the rest
