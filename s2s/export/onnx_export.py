"""`s2s-export exp/x out/`: a trained experiment as an ONNX serving bundle (docs/export.md).

Each graph (s2s.export.graphs) is traced by torch.onnx's dynamo exporter (torch.export, then
onnxscript's torchlib) at opset OPSET, with dynamic batch, time, beam and cache axes, on example
inputs made by the model itself (the step's cache comes from a real `init_state`), then checked
with onnx.checker. The tokenizer, CMVN and config are copied beside the graphs, and a manifest
lists it all (s2s.export.bundle).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
import onnxscript
import torch
from torch.export import Dim

from s2s.artifact import created, readme
from s2s.export.bundle import BundleError, write_manifest
from s2s.export.graphs import CtcGraph, EncoderGraph, StartGraph, StepGraph, step_inputs

OPSET = 18
# Example sizes for tracing: every dynamic axis > 1, so none is specialised to a constant.
EXAMPLE_UTTS, EXAMPLE_BEAM = 2, 3
BIG = 1 << 20  # upper bound of the dynamic axes: any length


def _export(module: torch.nn.Module, args: tuple, names: tuple[list, list], dyn, path: Path):
    """Trace `module` on `args` to `path` with input/output names and dynamic shapes."""
    try:
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            dynamic_shapes=dyn,
            input_names=names[0],
            output_names=names[1],
            opset_version=OPSET,
            optimize=True,
            external_data=False,
            verbose=False,
        )
    except Exception as e:  # the exporter's own errors run to pages: its summary line here
        summary = next((line for line in str(e).splitlines() if line.startswith("<class")), "")
        raise BundleError(
            f"{path.name}: the exporter failed ({type(e).__name__}) {summary}".strip()
        ) from e
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


def export_model(model, cfg, out: Path) -> dict:
    """Write the graphs of `model` (a Seq2SeqModel, eval mode) into `out`; returns the
    manifest's "model" entry."""
    model = model.eval()
    dec = model.decoder
    speech = cfg.data.source == "speech"
    U = EXAMPLE_UTTS
    min_len = model.min_input_length
    T = max(4 * min_len, 64)
    g = torch.Generator().manual_seed(0)  # example values only; the graphs never see them
    if speech:
        src = torch.randn(U, T, cfg.model.encoder.input_dim, generator=g)
    else:
        src = torch.randint(4, model.vocab_size, (U, T), generator=g)
    src_lens = torch.tensor([T, T - T // 4])
    Ud, Td = Dim("batch", min=1, max=BIG), Dim("src_time", min=min_len, max=BIG)
    _export(
        EncoderGraph(model),
        (src, src_lens),
        (["src", "src_lens"], ["memory", "memory_lens"]),
        ({0: Ud, 1: Td}, {0: Ud}),
        out / "encoder.onnx",
    )
    with torch.no_grad():
        memory, memory_lens = model.encode(src, src_lens)
    Sd = Dim("frames", min=1, max=BIG)
    if model.ctc is not None:
        _export(
            CtcGraph(model), (memory,), (["memory"], ["ctc_log_probs"]), ({0: Ud, 1: Sd},),
            out / "ctc.onnx",
        )  # fmt: skip
    return {
        "source": cfg.data.source,
        "vocab_size": model.vocab_size,
        "min_input_length": min_len,
        "subsampling_factor": model.subsampling_factor,  # decode.encoder_views starts
        "ctc": model.ctc is not None,
        **export_decoder(dec, memory, memory_lens, out),
    }


def export_decoder(dec, memory: torch.Tensor, memory_lens: torch.Tensor, out: Path) -> dict:
    """decoder_start.onnx and decoder_step.onnx of `dec` (a Decoder, eval mode) into `out`,
    traced on example encoder output memory (B, S, d) with memory_lens (B,), B > 1 and S > 1;
    returns the manifest's decoder entries."""
    dec = dec.eval()
    arrangement = dec.cfg.arrangement
    U = memory.shape[0]
    Ud, Sd = Dim("batch", min=1, max=BIG), Dim("frames", min=1, max=BIG)
    slot_names = list(dec.layers[0].self_attn.slot_shapes())
    L = len(dec.layers)
    if arrangement == "cross":
        start_out = [f"memory.{i}.{kv}" for i in range(L) for kv in "kv"]
    else:
        start_out = ["prefix_lens", *(f"prefix.{i}.{n}" for i in range(L) for n in slot_names)]
    _export(
        StartGraph(dec),
        (memory, memory_lens),
        (["memory", "memory_lens"], start_out),
        ({0: Ud, 1: Sd}, {0: Ud}),
        out / "decoder_start.onnx",
    )
    K, fed = EXAMPLE_BEAM, 2 * dec.stride  # fed tokens: every row then uses >= 2 own slots
    state = dec.init_state(memory, memory_lens, beam=K, ancestry=True, max_len=fed + 1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, dec.embed.num_embeddings, (U * K,), generator=g)
    for _ in range(fed):
        dec.step(tokens, state)
    names, values = step_inputs(state, tokens)
    Kd, Od = Dim("beam", min=1, max=BIG), Dim("own_slots", min=1, max=BIG)
    Hd = Dim("shared_slots", min=1, max=BIG)
    dyn = []
    for name in names:
        if name in ("tokens", "length"):
            dyn.append({0: Ud, 1: Kd})
        elif name == "owner" or name.startswith("own."):
            dyn.append({0: Ud, 1: Kd, 2: Od})
        elif name.startswith("memory."):
            dyn.append({0: Ud, 2: Sd})
        elif name.startswith("shared."):
            dyn.append({0: Ud, 1: Hd})
        else:  # memory_lens, shared_slots
            dyn.append({0: Ud})
    step_out = ["log_probs", *(f"slot.{i}.{n}" for i in range(L) for n in slot_names)]
    _export(
        StepGraph(dec),
        tuple(values),
        (names, step_out),
        (dyn[0], dyn[1], dyn[2], tuple(dyn[3:])),
        out / "decoder_step.onnx",
    )
    att = dec.layers[0].self_attn
    return {
        "arrangement": arrangement,
        "attention": dec.cfg.self_attention().type,
        "stride": dec.stride,
        "n_layers": L,
        "slot_shapes": {n: list(s) for n, s in att.slot_shapes().items()},
        "cache_bytes_per_token": dec.cache_bytes_per_token(),
    }


def export_experiment(
    exp_dir: str | Path, out: str | Path, checkpoint: str = "", force: bool = False
) -> dict:
    """Export exp_dir (its model_avg.pt, or `checkpoint`; s2s.experiment.load_experiment) as
    an ONNX bundle into `out`, a new folder (or, with force, one replaced). Written beside
    and moved in whole, so a reader never sees half a bundle. Returns the manifest."""
    from s2s.experiment import ExperimentError, load_experiment

    exp_dir, out = Path(exp_dir), Path(out)
    try:
        exp = load_experiment(exp_dir, checkpoint=checkpoint, lm=False)
    except ExperimentError as e:
        raise BundleError(str(e)) from e
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cfg = exp.copy_to(tmp)  # config.yaml, tokenizer.model, cmvn.pt
        try:
            info = export_model(exp.model, cfg, tmp)
        except BundleError as e:
            raise BundleError(f"{exp_dir}: {e}") from e
        (tmp / "README.md").write_text(_readme(exp_dir.name, info))
        manifest = write_manifest(
            tmp,
            {
                "experiment": exp_dir.name,
                "weights": exp.weights.name,
                "created": created(),
                "opset": OPSET,
                "exporter": f"torch.onnx dynamo (torch {torch.__version__}, onnxscript "
                f"{onnxscript.__version__}, onnx {onnx.__version__})",
                "model": info,
            },
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _readme(name: str, info: dict) -> str:
    use = "a.wav" if info["source"] == "speech" else "--text documents.txt"
    about = (
        f"An s2s model exported for serving: {info['attention']} decoder self-attention "
        f"(stride {info['stride']}), `{info['arrangement']}` arrangement, {info['n_layers']} "
        f"decoder layers. Each decoded token adds {info['cache_bytes_per_token']:.0f} bytes of "
        "self-attention cache (float32) per hypothesis."
    )
    return readme(
        f"{name} (ONNX)",
        about,
        f"s2s-decode --model {name}_onnx --backend onnxruntime {use}",
        f"{name}_onnx",
        note="; docs/export.md in s2s describes the graphs' inputs and outputs",
    )
