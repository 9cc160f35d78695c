"""The stages of every recipe (see STAGES), each re-runnable alone.

data/<set>/            data dirs (stage 1), data/<train>_sp (stage 2), data/<set>_filt (4)
data/token/            the SentencePiece model (stage 5)
dump/<set>/            feature dumps (stage 3), dump/<train>/cmvn.pt (stage 6)
exp/<name>/            the experiment (stages 7-10), logs in exp/<name>/logs/
RESULTS.md             quality with speed and memory, one section per experiment (stage 10)
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from s2s.recipe import processes
from s2s.recipe.config import STAGES, RecipeConfig
from s2s.recipe.corpus import load_corpus_module
from s2s.threads import threads_per_job

log = logging.getLogger("s2s.recipe")


@dataclass
class RunOptions:
    """The run.sh flags (ESPnet names). Empty / zero values keep what the configs say."""

    recipe_dir: Path = Path(".")
    stage: int = 0
    stop_stage: int = 100
    ngpu: int = 0
    nj: int = 1
    attention: str = ""
    stride: int = 0
    arrangement: str = ""
    model_config: str = ""
    train_config: str = ""
    decode_config: str = ""
    tag: str = ""
    init_param: list[str] = field(default_factory=list)
    use_lm: bool = True
    lm_config: str = ""
    skip_bad_audio: bool | None = None  # None: recipe.yaml's skip_bad_audio
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    # training across machines (ESPnet's flags, passed to torchrun): every node runs the same
    # command with its own node_rank, or, with rdzv_endpoint, a c10d rendezvous
    num_nodes: int = 1
    node_rank: int = 0
    master_addr: str = ""
    master_port: int = 29500
    rdzv_endpoint: str = ""
    max_restarts: int = 0

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or not 0 <= self.node_rank < self.num_nodes:
            raise ValueError(
                f"need num_nodes >= 1 and 0 <= node_rank < num_nodes, got --num_nodes "
                f"{self.num_nodes} --node_rank {self.node_rank}"
            )
        if self.num_nodes > 1 and not (self.master_addr or self.rdzv_endpoint):
            raise ValueError(
                "--num_nodes > 1 needs --master_addr (the node of rank 0) or --rdzv_endpoint "
                "HOST:PORT"
            )
        if self.max_restarts < 0:
            raise ValueError(f"--max_restarts must be >= 0, got {self.max_restarts}")


def torchrun_args(opts: RunOptions, run_id: str) -> list[str]:
    """torchrun's launch flags for stage 7, [] for one process: --ngpu processes a node
    (one on the CPU) on --num_nodes nodes, by a static rendezvous at --master_addr:--master_port
    (each node its --node_rank, as ESPnet's run.sh does) or a c10d one at --rdzv_endpoint
    (ranks assigned as nodes join); --max_restarts restarts the workers after a failure, and
    the trainer resumes from the last checkpoint."""
    per_node = max(opts.ngpu, 1)
    if opts.num_nodes == 1 and per_node == 1 and opts.max_restarts == 0:
        return []
    out = [f"--nproc_per_node={per_node}"]
    if opts.num_nodes == 1 and not opts.rdzv_endpoint:
        out.insert(0, "--standalone")
    elif opts.rdzv_endpoint:
        out += [f"--nnodes={opts.num_nodes}", "--rdzv_backend=c10d"]
        out += [f"--rdzv_endpoint={opts.rdzv_endpoint}", f"--rdzv_id={run_id}"]
    else:
        out += [f"--nnodes={opts.num_nodes}", f"--node_rank={opts.node_rank}"]
        out += [f"--master_addr={opts.master_addr}", f"--master_port={opts.master_port}"]
    if opts.max_restarts:
        out.append(f"--max_restarts={opts.max_restarts}")
    return out


class Recipe:
    """The stages of one recipe run. `env` is added to the environment of every command a
    stage runs (the demo gives side-by-side trainings OMP_NUM_THREADS); with `label`, each line
    those commands print is echoed as "[label] line", so runs in threads of one process can be
    told apart on the console (their logs are apart already)."""

    def __init__(
        self,
        cfg: RecipeConfig,
        opts: RunOptions,
        *,
        env: dict[str, str] | None = None,
        label: str = "",
    ) -> None:
        self.cfg, self.opts = cfg, opts
        self.env, self.label = dict(env or {}), label
        self.root = Path(opts.recipe_dir).resolve()
        self.data = self.root / "data"
        self.dump = self.root / "dump"
        self.speech = cfg.source == "speech"

    def _command_env(self) -> dict[str, str]:
        """The environment of a stage's command: this process's, unbuffered output, `env`."""
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    @property
    def console_prefix(self) -> str:
        """What each console line of this run starts with: "[label] ", or nothing."""
        return f"[{self.label}] " if self.label else ""

    # --- names and paths ------------------------------------------------------------------
    def _conf(self, option: str, default: str) -> Path:
        return self.root / (option or default)

    @property
    def model_config(self) -> Path:
        return self._conf(self.opts.model_config, self.cfg.model_config)

    @property
    def train_config(self) -> Path:
        return self._conf(self.opts.train_config, self.cfg.train_config)

    @property
    def decode_config(self) -> Path:
        return self._conf(self.opts.decode_config, self.cfg.decode_config)

    @property
    def train_set(self) -> str:
        sp = self.speech and self.cfg.speed_perturb
        return f"{self.cfg.train_set}_sp" if sp else self.cfg.train_set

    @property
    def tokenizer_path(self) -> Path:
        t = self.cfg.tokenizer
        src = self.cfg.src_ctc_field
        joint = f"_{self.cfg.target_field}+{src}" if src else ""  # trained on both languages
        return self.data / "token" / f"{t.model_type}{t.vocab_size}{joint}.model"

    @property
    def attention_config(self) -> Path | None:
        """conf/attention/<name>.yaml of the repository for --attention NAME."""
        if not self.opts.attention:
            return None
        path = self.root.parents[2] / "conf" / "attention" / f"{self.opts.attention}.yaml"
        if not path.is_file():
            raise ValueError(f"--attention {self.opts.attention}: {path} not found")
        return path

    def experiment_overrides(self) -> list[str]:
        """Dot-list overrides of the experiment config, later entries winning: the recipe's
        data paths, then recipe.yaml's `overrides`, then each --config file, then the run.sh
        flags and key=value arguments (the command line beats the recipe's defaults)."""
        o = self.opts
        out = []
        d = self.cfg
        data = {
            "source": d.source,
            "train_dir": self.data / f"{self.train_set}_filt",
            "valid_dir": self.data / f"{d.valid_set}_filt",
            "tokenizer": self.tokenizer_path,
            "target_field": d.target_field,
            "source_field": d.source_field,
            "src_ctc_field": d.src_ctc_field,
            "normalize": d.tokenizer.normalize,
        }
        if self.speech:
            data |= {
                "train_dump": self.dump / self.train_set,
                "valid_dump": self.dump / d.valid_set,
            }
            data["cmvn"] = self.dump / self.train_set / "cmvn.pt" if d.global_cmvn else ""
        out += [f"data.{k}={v}" for k, v in data.items() if v != ""]  # "" would parse as null
        if self.speech:
            feats = OmegaConf.to_container(OmegaConf.structured(d.features))
            out += [f"data.features.{k}={v}" for k, v in feats.items()]
        # The dev set's greedy decode in TensorBoard is scored like stage 10 scores the test.
        out.append(f"train.monitor.metrics={json.dumps(list(d.metrics))}")
        out += list(self.cfg.overrides)
        for path in o.configs:  # --config: a whole setting, over recipe.yaml's choices
            out += yaml_overrides(self.root / path)
        if o.stride:
            out.append(f"model.decoder.attention.stride={o.stride}")
        if o.arrangement:
            out.append(f"model.decoder.arrangement={o.arrangement}")
        if o.ngpu == 0:
            out.append("train.device=cpu")
        if o.init_param:
            out.append(f"train.init_param={json.dumps(self.init_param())}")
        return out + list(o.overrides)

    def init_param(self) -> list[str]:
        """--init_param entries with a relative source made relative to the recipe dir."""
        from s2s.train.init_param import InitParam

        out = []
        for spec in self.opts.init_param:
            p = InitParam.parse(spec)
            source = (self.root / p.source).resolve()
            parts = [str(source), p.src_key, p.dst_key] + (
                [",".join(p.exclude)] if p.exclude else []
            )
            out.append(":".join(parts))
        return out

    def experiment_config(self):
        from s2s.experiment import load_experiment_config

        paths = [self.model_config, self.attention_config, self.train_config, self.decode_config]
        paths = [p for p in paths if p is not None]
        return load_experiment_config(paths, self.experiment_overrides())

    @property
    def exp_name(self) -> str:
        cfg = self.experiment_config()
        att = cfg.model.decoder.self_attention()
        name = f"{self.model_config.stem}_{att.type}"
        if att.type == "mtla":
            name += f"_s{att.stride}"
        name += f"_{cfg.model.decoder.arrangement}"
        # an initialised model is another experiment than the one trained from scratch
        tag = self.opts.tag or ("init" if self.opts.init_param else "")
        return name + (f"_{tag}" if tag else "")

    @property
    def exp_dir(self) -> Path:
        return self.root / "exp" / self.exp_name

    def decode_overrides(self) -> list[str]:
        """The command line's decode.* settings, which decoding applies after the decode YAML
        (the other key=value arguments are for training; config.yaml holds recipe.yaml's),
        plus decode.lm = the recipe's LM when the settings fuse one (lm_weight > 0)."""
        from s2s.experiment import decoding_config

        out = [o for o in self.opts.overrides if o.startswith("decode.")]
        lm = self.lm_exp_dir
        if lm is None or any(o.startswith("decode.lm=") for o in out):
            return out
        if decoding_config(self.exp_dir, self.decode_config, out).decode.lm_weight > 0:
            out.append(f"decode.lm={lm}")
        return out

    # --- the language model -----------------------------------------------------------------
    @property
    def lm_config(self) -> Path | None:
        """The LM YAML (--lm_config, else recipe.yaml's), None without one or --use_lm false."""
        name = self.opts.lm_config or self.cfg.lm_config
        return self.root / name if name and self.opts.use_lm else None

    def lm_experiment_config(self):
        """The LM's experiment config: its YAML, the recipe's training targets and tokenizer
        (the model's: the LM scores the decoder's tokens), then recipe.yaml's lm_overrides."""
        from s2s.experiment import LMExperimentConfig, load_experiment_config

        d = self.cfg
        out = [
            f"data.train_dir={self.data / f'{self.train_set}_filt'}",
            f"data.valid_dir={self.data / f'{d.valid_set}_filt'}",
            f"data.text_field={d.target_field}",
            f"data.tokenizer={self.tokenizer_path}",
            f"data.normalize={d.tokenizer.normalize}",
        ]
        if self.opts.ngpu == 0:
            out.append("train.device=cpu")
        out += list(d.lm_overrides)
        return load_experiment_config([self.lm_config], out, schema=LMExperimentConfig)

    @property
    def lm_exp_dir(self) -> Path | None:
        """exp/lm_<LM YAML stem>_<attention>[_s<stride>], or None without an LM."""
        if self.lm_config is None:
            return None
        att = self.lm_experiment_config().lm.layer_config().self_attention()
        name = f"lm_{self.lm_config.stem}_{att.type}"
        return self.root / "exp" / (name + (f"_s{att.stride}" if att.type == "mtla" else ""))

    def decode_name(self) -> str:
        """This run's decoding settings as a name: the decode YAML's stem plus each setting
        that differs from the YAML's (s2s.experiment.decoding_name), e.g. beam5_beam_size2."""
        from s2s.experiment import decoding_config, decoding_name

        cfg = decoding_config(self.exp_dir, self.decode_config, self.decode_overrides())
        return decoding_name(cfg.decode, self.decode_config)

    def decode_dir(self, test_set: str) -> Path:
        return self.exp_dir / f"decode_{test_set}_{self.decode_name()}"

    # --- driver ---------------------------------------------------------------------------
    def run(self) -> None:
        for n in sorted(STAGES):
            if self.opts.stage <= n <= self.opts.stop_stage:
                with self._logged(n):
                    getattr(self, f"stage{n}")()

    @contextmanager
    def _logged(self, n: int):
        logs = self.exp_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / f"stage{n}.log", mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        # only this thread's records: recipes run side by side in threads (s2s.demo) share
        # the root logger, and each stage log is its own run's
        thread = threading.get_ident()
        handler.addFilter(lambda entry: entry.thread == thread)
        root = logging.getLogger()
        root.addHandler(handler)
        log.info("%sstage %d: %s", self.console_prefix, n, STAGES[n])
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()

    # --- stages ---------------------------------------------------------------------------
    def _corpus(self):
        """The recipe.yaml's corpus module from the repository's local/, loaded by path (never
        as `local`: s2s/recipe/corpus.py says why)."""
        return load_corpus_module(self.root.parents[2], self.cfg.corpus)

    def _embedded(self) -> bool:
        return "src_root" not in inspect.signature(self._corpus().prepare).parameters

    def stage0(self) -> None:
        """Download the corpus (real corpora), or say why there is nothing to do."""
        if self._embedded():
            log.info(
                "embedded corpus %s: generated in stage 1, nothing to download", self.cfg.corpus
            )
            return
        root = self.root / self.cfg.corpus_root
        if root.is_dir() and any(root.iterdir()):
            log.info("%s already holds the corpus: skipping the download", root)
            return
        corpus = self._corpus()
        if not hasattr(corpus, "download"):
            raise RuntimeError(
                f"{self.cfg.corpus} cannot be downloaded automatically; put it under {root}.\n"
                f"{inspect.getdoc(corpus)}"
            )
        corpus.download(root)

    def stage1(self) -> None:
        """Corpus layout -> data/<set>/ data dirs."""
        prepare = self._corpus().prepare
        args = dict(self.cfg.prepare_args)
        if "nj" in inspect.signature(prepare).parameters:
            args.setdefault("nj", self.opts.nj)
        if self._embedded():
            sets = prepare(out_root=self.data, **args)
        else:
            sets = prepare(src_root=self.root / self.cfg.corpus_root, out_root=self.data, **args)
        for name, dd in sets.items():
            log.info("data/%s: %d utterances", name, len(dd.utt_ids))

    def stage2(self) -> None:
        """Speed perturbation of the training set (speech): data/<train>_sp with every
        utterance at 1.0 and at each extra factor (ids prefixed sp<factor>-, as ESPnet)."""
        if not self.speech or not self.cfg.speed_perturb:
            log.info("no speed perturbation configured: skipped")
            return
        from s2s.recipe.perturb import speed_perturb_datadir

        speed_perturb_datadir(
            self.data / self.cfg.train_set,
            self.data / self.train_set,
            self.cfg.speed_perturb,
            sample_rate=self.cfg.features.sample_rate,
            nj=self.opts.nj,
        )

    def _all_sets(self) -> list[str]:
        return [self.train_set, self.cfg.valid_set, *self.cfg.test_sets]

    @property
    def skip_bad_audio(self) -> bool:
        opt = self.opts.skip_bad_audio
        return self.cfg.skip_bad_audio if opt is None else opt

    def stage3(self) -> None:
        """Fbank features of every set -> dump/<set>/, reading every utterance of every set
        before judging: utterances whose audio cannot be read or is too short for the model
        (fewer frames than its frontend needs for one output frame) are all listed, one line
        each (shorter than filter.min_frames but encodable is no error: stage 4 drops those
        from the training sets as before). Then the stage stops, or with skip_bad_audio they
        are left out and listed in dump/<set>/bad_utts (stage 4 drops them from
        data/<set>_filt). A stage 3 that was killed, run again with the same --nj, keeps the
        shards it finished (s2s.data.features.dump_features)."""
        if not self.speech:
            log.info("text source: no features to dump")
            return
        from s2s.data.features import BAD_UTTS, BadAudioError, bad_audio_lines, dump_features
        from s2s.models.subsampling import min_input_frames

        skip, n_bad = self.skip_bad_audio, 0
        min_frames = min_input_frames(self.experiment_config().model.encoder.subsampling)
        for name in self._all_sets():
            args = dict(nj=self.opts.nj, skip_bad=skip, min_frames=min_frames)
            try:
                out = dump_features(self.data / name, self.dump / name, self.cfg.features, **args)
            except BadAudioError as e:  # stop after every set is read, with all of them listed
                for line in bad_audio_lines(e.bad):
                    log.error("data/%s: %s", name, line)
                log.error("data/%s: %d utterances with unusable audio", name, len(e.bad))
                n_bad += len(e.bad)
                continue
            bad = (out / BAD_UTTS).read_text().splitlines() if skip else []
            for line in bad:
                utt, path, why = line.split(" ", 2)
                log.warning("data/%s: skipped utterance %s (%s): %s", name, utt, path, why)
            log.info("data/%s: features of %s utterances", name, _features_count(out))
            if bad:
                log.info(
                    "data/%s: skipped %d bad utterances, listed in %s",
                    name,
                    len(bad),
                    out / BAD_UTTS,
                )
        if n_bad:
            raise RuntimeError(
                f"stage 3: {n_bad} utterances have unreadable or too short audio (listed "
                "above); repair or remove them (s2s-validate-data --audio DIR lists them), or "
                "run with --skip_bad_audio true to train without them"
            )

    def stage4(self) -> None:
        """Drop training/validation utterances that are empty, too short or too long;
        test sets are kept whole (filtered copies are written for every set)."""
        from s2s.recipe.filtering import filter_set

        for name in self._all_sets():
            keep_all = name in self.cfg.test_sets
            dump = self.dump / name if self.speech else None
            filter_set(self.data / name, self.data / f"{name}_filt", dump, self.cfg, keep_all)

    def stage5(self) -> None:
        """SentencePiece model on the (normalised) training targets (and text sources, or the
        source transcripts of the source CTC)."""
        from s2s.data.datadir import load_datadir
        from s2s.data.tokenizer import normalize_text, train_sentencepiece

        dd = load_datadir(self.data / f"{self.train_set}_filt")
        src = self.cfg.src_ctc_field if self.speech else self.cfg.source_field
        fields = [self.cfg.target_field] + ([src] if src else [])
        mode = self.cfg.tokenizer.normalize
        texts = [normalize_text(dd.texts[f][u], mode) for f in fields for u in dd.utt_ids]
        self.tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
        tok = train_sentencepiece(
            texts,
            str(self.tokenizer_path.with_suffix("")),
            self.cfg.tokenizer.vocab_size,
            model_type=self.cfg.tokenizer.model_type,
        )
        log.info("tokenizer %s: %d pieces", self.tokenizer_path, tok.vocab_size)

    def stage6(self) -> None:
        """Global CMVN statistics of the training features."""
        if not self.speech or not self.cfg.global_cmvn:
            log.info("no global CMVN for this recipe: skipped")
            return
        from s2s.data.features import compute_cmvn_stats

        compute_cmvn_stats(self.dump / self.train_set, self.dump / self.train_set / "cmvn.pt")

    def stage7(self) -> None:
        """Train the language model, when the recipe has one (into exp/lm_*/, averaged right
        away), then exp/<name>/ (under torchrun with --ngpu > 1, --num_nodes > 1 or
        --max_restarts: torchrun_args), from --init_param when given."""
        from s2s.experiment import save_experiment_config

        if self.lm_exp_dir is not None:
            self._train_lm()
        cfg = self.experiment_config()
        for spec in cfg.train.init_param:
            self._check_init_source(spec)
        exp = self.exp_dir
        save_experiment_config(cfg, exp / "config.requested.yaml")
        cmd = [
            sys.executable,
            "-m",
            "s2s.cli.train",
            "--config",
            str(exp / "config.requested.yaml"),
            "--exp-dir",
            str(exp),
        ]
        launch = torchrun_args(self.opts, self.exp_name)
        if launch:
            cmd = [sys.executable, "-m", "torch.distributed.run", *launch, *cmd[1:]]
        self._run(cmd, exp / "logs" / "train.log")

    def _train_lm(self) -> None:
        from s2s.experiment import save_experiment_config

        exp = self.lm_exp_dir
        save_experiment_config(self.lm_experiment_config(), exp / "config.requested.yaml")
        train = [sys.executable, "-m", "s2s.cli.train", "--lm", "--exp-dir", str(exp)]
        requested = str(exp / "config.requested.yaml")
        self._run([*train, "--config", requested], exp / "logs" / "train.log")
        average = [*train, "--config", str(exp / "config.yaml"), "--average-only"]
        self._run(average, exp / "logs" / "average.log")

    def _check_init_source(self, spec: str) -> None:
        """FileNotFoundError saying which command produces a missing --init_param source."""
        from s2s.train.init_param import InitParam, source_weights

        source = InitParam.parse(spec).source
        try:
            source_weights(source)
        except FileNotFoundError as e:
            how = producing_command(Path(source))
            raise FileNotFoundError(f"--init_param: {e}; {how}") from None

    def stage8(self) -> None:
        """Average the best checkpoints into exp/<name>/model_avg.pt."""
        self._run(
            [
                sys.executable,
                "-m",
                "s2s.cli.train",
                "--config",
                str(self.exp_dir / "config.yaml"),
                "--exp-dir",
                str(self.exp_dir),
                "--average-only",
            ],
            self.exp_dir / "logs" / "average.log",
        )

    def stage9(self) -> None:
        """Beam search over every test set -> exp/<name>/decode_<set>_<decode name>/, with the
        settings of config.yaml, then the decode YAML, then the command line's decode.*.
        With --ngpu N > 1 (one shard a GPU) or, on the CPU, --nj N > 1 (the cores shared
        out), the set is decoded in N shards side by side (decode_<...>/split<N>/<K>/, logs
        per shard) and merged in the data dir's order (s2s.decode.decode_dir)."""
        device = "cuda" if self.opts.ngpu > 0 else "cpu"
        shards = self.opts.ngpu if self.opts.ngpu > 1 else (self.opts.nj if device == "cpu" else 1)
        for name in self.cfg.test_sets:
            out = self.decode_dir(name)
            cmd = self._decode_command(name, out, device)
            if shards <= 1:
                self._run(cmd, self.exp_dir / "logs" / f"{out.name}.log")
            else:
                self._decode_sharded(cmd, name, out, shards)

    def _decode_sharded(self, cmd: list[str], name: str, out: Path, n: int) -> None:
        from s2s.decode.decode_dir import merge_shards

        threads = threads_per_job(n, os.cpu_count() or 1)
        parts = [out / f"split{n}" / str(k) for k in range(1, n + 1)]
        procs = []
        for k, part in enumerate(parts, 1):
            shard = [*cmd, "--shard", f"{k}/{n}"]
            shard[shard.index("--out") + 1] = str(part)
            if self.opts.ngpu > 1:
                shard[shard.index("--device") + 1] = f"cuda:{k - 1}"
            else:
                shard += ["--threads", str(threads)]
            log_path = self.exp_dir / "logs" / f"{out.name}.{k}.log"
            log.info("running shard %d/%d: %s (log: %s)", k, n, " ".join(shard), log_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "w") as f:
                env = self._command_env()
                procs.append((processes.start(shard, stdout=f, stderr=subprocess.STDOUT, env=env),
                              log_path))  # fmt: skip
        failed = [str(path) for proc, path in procs if proc.wait() != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} decoding shards failed; see {failed[0]}")
        data = self.data / f"{name}_filt"
        summary = merge_shards(parts, data, out)
        log.info(
            "%s: %d utterances in %d shards, %.2f utt/s -> %s",
            name, summary["utterances"], n, summary["utterances_per_s"], out,
        )  # fmt: skip

    def _decode_command(self, name: str, out: Path, device: str) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "s2s.cli.decode",
            "--model",
            str(self.exp_dir),
            "--data",
            str(self.data / f"{name}_filt"),
            "--out",
            str(out),
            "--decode-config",
            str(self.decode_config),
            "--device",
            device,
        ]
        if self.speech:
            cmd += ["--dump", str(self.dump / name)]
        return cmd + self.decode_overrides()

    def stage10(self) -> None:
        """score.json per decode dir and this experiment's rows of RESULTS.md (one per test set
        and decoding settings)."""
        decode_name = self.decode_name()
        for name in self.cfg.test_sets:
            out = self.decode_dir(name)
            cmd = [
                sys.executable,
                "-m",
                "s2s.cli.score",
                "--decode-dir",
                str(out),
                "--metrics",
                ",".join(self.cfg.metrics),
                "--results",
                str(self.root / "RESULTS.md"),
                "--exp",
                self.exp_name,
                "--set",
                name,
                "--decode",
                decode_name,
            ]
            self._run(cmd, self.exp_dir / "logs" / f"score_{out.name}.log")

    def _run(self, cmd: list[str], logfile: Path) -> None:
        """Run a stage's command, its output both on the console and in logfile."""
        logfile.parent.mkdir(parents=True, exist_ok=True)
        log.info("running: %s (log: %s)", " ".join(cmd), logfile)
        env = self._command_env()
        with open(logfile, "w") as f:
            proc = processes.start(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(self.console_prefix + line)
                f.write(line)
            rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"command failed with exit code {rc}; see {logfile}")


def _features_count(dump: Path) -> int:
    """How many utterances a feature dump holds (its feats.json)."""
    return json.loads((dump / "feats.json").read_text())["num_utts"]


def producing_command(source: Path) -> str:
    """How to produce a missing experiment `source` (exp/<name>/ or a file in it) of another
    recipe: the run.sh command whose flags name exactly that experiment, when they can be
    found from its name, else where to look."""
    import re

    from s2s.attention.config import CONFIG_CLASSES
    from s2s.models.decoder import ARRANGEMENTS
    from s2s.recipe.config import load_recipe_config

    exp = source if source.parent.name == "exp" else source.parent
    recipe = exp.parent.parent
    if exp.parent.name != "exp" or not (recipe / "conf" / "recipe.yaml").is_file():
        return "train that experiment first (model_avg.pt comes from stage 8)"
    generic = f"train it first with {recipe}/run.sh (stages 1-8) and the flags that name {exp.name}"
    pattern = (
        rf"^(?P<model>.+?)_(?P<att>{'|'.join(sorted(CONFIG_CLASSES))})(?:_s(?P<stride>\d+))?"
        rf"_(?P<arr>{'|'.join(ARRANGEMENTS)})(?:_(?P<tag>.+))?$"
    )
    m = re.match(pattern, exp.name)
    if m is None:
        return generic
    opts = RunOptions(
        recipe_dir=recipe,
        attention=m["att"],
        stride=int(m["stride"] or 0),
        arrangement=m["arr"],
        tag=m["tag"] or "",
    )
    try:
        if Recipe(load_recipe_config(recipe / "conf" / "recipe.yaml"), opts).exp_name != exp.name:
            return generic
    except (ValueError, FileNotFoundError):
        return generic
    flags = f"--attention {opts.attention}" + (f" --stride {opts.stride}" if opts.stride else "")
    flags += f" --arrangement {opts.arrangement}" + (f" --tag {opts.tag}" if opts.tag else "")
    return f"produce it with: cd {recipe} && ./run.sh --stage 1 --stop_stage 8 {flags}"


def yaml_overrides(path: Path) -> list[str]:
    """An experiment YAML as dot-list overrides ("train.lr=0.002", lists and strings as JSON,
    which OmegaConf reads as YAML), so a --config file lands after recipe.yaml's overrides."""
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        tree = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:
        raise ValueError(f"--config {path}: {e}") from e
    if not isinstance(tree, dict):
        raise ValueError(f"--config {path}: expected a mapping of config sections")

    def flat(node: object, prefix: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [o for k, v in node.items() for o in flat(v, f"{prefix}{k}.")]
        return [f"{prefix[:-1]}={json.dumps(node)}"]

    return flat(tree, "")
