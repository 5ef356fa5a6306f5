"""Import and export KoGPT2 v1 (GluonNLP) weights: `python -m pretrain.convert`.

    # KoGPT2 v1 .params + .spiece -> a checkpoint of this project (either engine resumes it)
    python -m pretrain.convert --from kogpt2-v1 mxnet_kogpt2_9250058a.params \\
        --tokenizer kogpt2_news_wiki_ko_cased_818bfa919d.spiece --out work/kogpt2/step_00000000
    # a checkpoint of this project (local or s3://, a step directory or a root) -> KoGPT2 v1 .params
    python -m pretrain.convert --checkpoint work/run/checkpoints --to kogpt2-v1 work/export/mxnet_kogpt2_mine.params

KoGPT2 v1 was saved with Gluon's `save_parameters`: an MXNet NDArray file (`mx.nd.load` gives a dict
name -> NDArray; no pickle) keyed by the attribute path of each Parameter. U units, V vocab, T max
length (1024), L layers numbered from 0, F = 4U FFN size; dense weights are (out, in):

    _embed.weight (V, U)    _pos_embed.weight (T, U)    _logits_proj.weight (V, U)   [tied copy of _embed]
    _self_attention_layers.{i}._multi_head_qkv_proj.weight (3U, U) / .bias (3U,)   [rows q|k|v, heads
                                                                                    consecutive in each]
    _self_attention_layers.{i}._out_proj.weight (U, U) / .bias (U,)
    _ffn_layers.{i}._hidden_map.weight (F, U) / .bias (F,)    _ffn_layers.{i}._out_map.weight (U, F) / .bias (U,)
    _attn_ln.{i}.gamma / .beta (U,)    _ffn_ln.{i}.gamma / .beta (U,)    _final_ln.gamma / .beta (U,)

The network is the one this project trains (pre-LayerNorm, eps 1e-5, exact-erf GELU, learned
positions, causal scaled dot-product attention, logits through the tied embedding), so the mapping is
a renaming: no tensor is transposed or split (tests/test_convert_kogpt2.py checks the logits).

The number of heads is not stored in the file (it only changes how the qkv rows are grouped): it comes
from `--config` (model.num_heads), `--num-heads`, or the preset whose sizes the file matches (KoGPT2 v1
is the `base` preset: 12 layers, 768 units, 12 heads, max length 1024).

The imported checkpoint is a fresh start: step 0, zero AdamW moments (exactly a new optimizer, and what
both engines need to `resume:` it; `--weights-only` leaves them out, then only `init_from:` can use it),
and the .spiece copied in as its tokenizer/ (spm.model + tokenizer.json), so a run whose
`tokenizer.model` points at the same .spiece passes the tokenizer check.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from common.config import ConfigError, load_config, to_dict
from common.io import sha256_file
from common.schema import MODEL_PRESETS, ModelConfig, S3Config
from pretrain.checkpoint import CheckpointError
from pretrain.checkpoint.storage import StorageError

log = logging.getLogger("pretrain.convert")

KOGPT2_V1 = "kogpt2-v1"
STATE_FORMAT = "kogpt-ckpt-v1"
_LAYER_RE = re.compile(r"^(_self_attention_layers|_ffn_layers|_attn_ln|_ffn_ln)\.(\d+)\.")


class ConvertError(ValueError):
    """The input does not have the expected layout or sizes; the message says what it holds and the fix."""


# ----------------------------------------------------------------------------------------------------
# the name mapping (engine-neutral names: docs/CONTRACTS.md "Model tensors")


def v1_to_neutral_names(num_layers: int) -> dict[str, str]:
    """KoGPT2 v1 parameter name -> engine-neutral name, for every tensor except the tied `_logits_proj`."""
    m = {"_embed.weight": "wte.weight", "_pos_embed.weight": "wpe.weight",
         "_final_ln.gamma": "ln_f.weight", "_final_ln.beta": "ln_f.bias"}
    for i in range(num_layers):
        att, ffn = f"_self_attention_layers.{i}.", f"_ffn_layers.{i}."
        m.update({
            f"_attn_ln.{i}.gamma": f"h.{i}.ln_1.weight", f"_attn_ln.{i}.beta": f"h.{i}.ln_1.bias",
            att + "_multi_head_qkv_proj.weight": f"h.{i}.attn.qkv.weight",
            att + "_multi_head_qkv_proj.bias": f"h.{i}.attn.qkv.bias",
            att + "_out_proj.weight": f"h.{i}.attn.proj.weight", att + "_out_proj.bias": f"h.{i}.attn.proj.bias",
            f"_ffn_ln.{i}.gamma": f"h.{i}.ln_2.weight", f"_ffn_ln.{i}.beta": f"h.{i}.ln_2.bias",
            ffn + "_hidden_map.weight": f"h.{i}.mlp.fc.weight", ffn + "_hidden_map.bias": f"h.{i}.mlp.fc.bias",
            ffn + "_out_map.weight": f"h.{i}.mlp.proj.weight", ffn + "_out_map.bias": f"h.{i}.mlp.proj.bias",
        })
    return m


def neutral_shapes(num_layers: int, units: int, vocab: int, max_length: int, hidden: int) -> dict[str, tuple]:
    """Engine-neutral name -> shape for a model of these sizes (hidden = FFN inner size)."""
    U, F = units, hidden
    s: dict[str, tuple] = {"wte.weight": (vocab, U), "wpe.weight": (max_length, U),
                           "ln_f.weight": (U,), "ln_f.bias": (U,)}
    for i in range(num_layers):
        s.update({f"h.{i}.ln_1.weight": (U,), f"h.{i}.ln_1.bias": (U,),
                  f"h.{i}.attn.qkv.weight": (3 * U, U), f"h.{i}.attn.qkv.bias": (3 * U,),
                  f"h.{i}.attn.proj.weight": (U, U), f"h.{i}.attn.proj.bias": (U,),
                  f"h.{i}.ln_2.weight": (U,), f"h.{i}.ln_2.bias": (U,),
                  f"h.{i}.mlp.fc.weight": (F, U), f"h.{i}.mlp.fc.bias": (F,),
                  f"h.{i}.mlp.proj.weight": (U, F), f"h.{i}.mlp.proj.bias": (U,)})
    return s


# ----------------------------------------------------------------------------------------------------
# sizes


def preset_of(num_layers: int, units: int, max_length: int, hidden: int) -> Optional[str]:
    """The MODEL_PRESETS name with these sizes (FFN 4U), or None."""
    for name, p in MODEL_PRESETS.items():
        if (p["num_layers"], p["units"], p["max_length"]) == (num_layers, units, max_length) and hidden == 4 * units:
            return name
    return None


def describe(num_layers: int, units: int, vocab: int, max_length: int, hidden: int,
             num_heads: Optional[int] = None) -> str:
    """'12 layers, 768 units, vocab 50000, max length 1024 (base)' -- the words used in error messages."""
    parts = [f"{num_layers} layers", f"{units} units"]
    if num_heads:
        parts.append(f"{num_heads} heads")
    if hidden != 4 * units:
        parts.append(f"FFN {hidden}")
    parts += [f"vocab {vocab}", f"max length {max_length}"]
    preset = preset_of(num_layers, units, max_length, hidden)
    return ", ".join(parts) + (f" (the {preset} preset)" if preset else " (no preset has these sizes)")


def infer_sizes(params: dict[str, np.ndarray], where: str) -> dict[str, int]:
    """(num_layers, units, vocab, max_length, hidden) of a KoGPT2 v1 parameter dict; raises ConvertError."""
    for key in ("_embed.weight", "_pos_embed.weight", "_ffn_layers.0._hidden_map.weight"):
        if key not in params:
            sample = ", ".join(sorted(params)[:4])
            raise ConvertError(f"{where} has no {key}: not a KoGPT2 v1 (GluonNLP GPT2Model) file saved with "
                               f"save_parameters. Its keys start: {sample} ...")
        if params[key].ndim != 2:
            raise ConvertError(f"{where}: {key} has shape {params[key].shape}, expected 2-D")
    layers = sorted({int(m.group(2)) for k in params if (m := _LAYER_RE.match(k))})
    if layers != list(range(len(layers))):
        raise ConvertError(f"{where}: layer indices {layers} are not 0..L-1: the file is incomplete")
    vocab, units = params["_embed.weight"].shape
    return {"num_layers": len(layers), "units": int(units), "vocab": int(vocab),
            "max_length": int(params["_pos_embed.weight"].shape[0]),
            "hidden": int(params["_ffn_layers.0._hidden_map.weight"].shape[0])}


def check_layout(params: dict[str, np.ndarray], sizes: dict[str, int], where: str) -> None:
    """Every expected key present with its shape, nothing unexpected; `_logits_proj.weight` (if present)
    equal to `_embed.weight`. Raises ConvertError listing what differs."""
    L, U, V, T, F = (sizes[k] for k in ("num_layers", "units", "vocab", "max_length", "hidden"))
    names = v1_to_neutral_names(L)
    shapes = neutral_shapes(L, U, V, T, F)
    want = {v1: shapes[n] for v1, n in names.items()}
    problems = [f"missing {k} {s}" for k, s in want.items() if k not in params]
    problems += [f"{k} has shape {tuple(params[k].shape)}, expected {s}" for k, s in want.items()
                 if k in params and tuple(params[k].shape) != s]
    extra = sorted(set(params) - set(want) - {"_logits_proj.weight"})
    problems += [f"unexpected {k} {tuple(params[k].shape)}" for k in extra]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ConvertError(f"{where} does not have the KoGPT2 v1 layout of a model with "
                           f"{describe(L, U, V, T, F)}: " + "; ".join(problems[:8]) + more)
    if "_logits_proj.weight" in params:
        lp = params["_logits_proj.weight"]
        if tuple(lp.shape) != (V, U) or not np.array_equal(lp, params["_embed.weight"]):
            raise ConvertError(f"{where}: _logits_proj.weight differs from _embed.weight, but KoGPT2 v1 and this "
                               "project tie the output projection to the token embedding; this file holds an "
                               "untied model, which cannot be converted without changing its outputs")


def resolve_heads(sizes: dict[str, int], num_heads: Optional[int], cfg_model: Optional[ModelConfig],
                  where: str) -> tuple[int, str]:
    """(num_heads, preset name to record) for the file's sizes; raises ConvertError when unknown."""
    L, U, T, F = sizes["num_layers"], sizes["units"], sizes["max_length"], sizes["hidden"]
    preset = preset_of(L, U, T, F)
    if num_heads is None and cfg_model is not None:
        num_heads = cfg_model.num_heads
    if num_heads is None and preset is not None:
        num_heads = MODEL_PRESETS[preset]["num_heads"]
    if num_heads is None:
        raise ConvertError(f"{where} holds a model with {describe(L, U, sizes['vocab'], T, F)}; the number of "
                           "attention heads is not stored in the file: pass --num-heads N (GPT-2 uses heads of "
                           f"64 units: {U // 64 if U % 64 == 0 else '?'} here) or --config with model.num_heads")
    if num_heads <= 0 or U % num_heads:
        raise ConvertError(f"--num-heads {num_heads} does not divide the file's {U} units")
    return num_heads, preset or "base"


def check_against_config(sizes: dict[str, int], num_heads: int, cfg_model: ModelConfig, vocab_wanted: int,
                         where: str, config_path: str) -> None:
    """Raise ConvertError, naming both sizes and the fix, when the file does not fit the config's model."""
    L, U, V, T, F = (sizes[k] for k in ("num_layers", "units", "vocab", "max_length", "hidden"))
    have = (L, U, num_heads, V, T, F)
    want = (cfg_model.num_layers, cfg_model.units, cfg_model.num_heads, vocab_wanted, cfg_model.max_length,
            cfg_model.hidden_size)
    if have == want:
        return
    preset = preset_of(L, U, T, F)
    fix = (f"set model.preset: {preset}" if preset else
           f"set model.num_layers: {L}, model.units: {U}, model.max_length: {T}, model.hidden_size: {F}")
    if V != vocab_wanted:
        fix += f" and model.vocab_size: {V} (or tokenizer.model: the .spiece that came with the file)"
    raise ConvertError(f"{where} holds a model with {describe(L, U, V, T, F)}, but {config_path} asks for "
                       f"{describe(*want[:2], want[3], want[4], want[5], want[2])}: {fix} in {config_path} "
                       "(or --set it), or convert the file meant for this config")


# ----------------------------------------------------------------------------------------------------
# reading and writing KoGPT2 v1 files


def read_v1_params(path: str) -> dict[str, np.ndarray]:
    """`mx.nd.load` a Gluon `save_parameters` file -> {name: fp32 numpy array} ('arg:'/'aux:' prefixes dropped)."""
    import mxnet as mx

    if not os.path.isfile(path):
        raise ConvertError(f"{path}: no such file (the KoGPT2 v1 weights are mxnet_kogpt2_*.params)")
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        why = lines[-1].replace("MXNetError: ", "") if lines else type(e).__name__   # the C++ check, not the trace
        raise ConvertError(f"{path} is not an MXNet NDArray file ({why}); KoGPT2 v1 weights are the "
                           "mxnet_kogpt2_*.params file, not the PyTorch pytorch_kogpt2_*.params one") from None
    if not isinstance(loaded, dict) or not loaded:
        raise ConvertError(f"{path} holds an unnamed NDArray list, not a Gluon save_parameters file")
    out: dict[str, np.ndarray] = {}
    for k, v in loaded.items():
        name = k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k
        out[name] = v.asnumpy().astype(np.float32, copy=False)
    return out


def v1_to_neutral(params: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """KoGPT2 v1 arrays (layout checked) -> engine-neutral arrays (the same data, renamed)."""
    return {n: np.ascontiguousarray(params[v1]) for v1, n in v1_to_neutral_names(num_layers).items()}


def neutral_to_v1(weights: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Engine-neutral arrays -> KoGPT2 v1 arrays, `_logits_proj.weight` the tied copy of `_embed.weight`."""
    if "wte.weight" not in weights or "wpe.weight" not in weights:
        raise ConvertError(f"{where} has no wte.weight/wpe.weight: not a GPT-2 checkpoint of this project")
    layers = sorted({int(n.split(".")[1]) for n in weights if n.startswith("h.")})
    L = len(layers)
    V, U = weights["wte.weight"].shape
    T = weights["wpe.weight"].shape[0]
    F = weights["h.0.mlp.fc.weight"].shape[0] if "h.0.mlp.fc.weight" in weights else 4 * U
    shapes = neutral_shapes(L, U, V, T, F)
    problems = [f"missing {n}" for n in shapes if n not in weights]
    problems += [f"unexpected {n}" for n in weights if n not in shapes]
    problems += [f"{n} has shape {tuple(weights[n].shape)}, expected {s}" for n, s in shapes.items()
                 if n in weights and tuple(weights[n].shape) != s]
    if problems:
        raise ConvertError(f"{where} does not hold the tensors of a GPT-2 with {describe(L, U, V, T, F)}: "
                           + "; ".join(problems[:8]))
    out = {v1: np.asarray(weights[n], dtype=np.float32) for v1, n in v1_to_neutral_names(L).items()}
    out["_logits_proj.weight"] = out["_embed.weight"]
    return out


def write_v1_params(arrays: dict[str, np.ndarray], path: str) -> None:
    """`mx.nd.save` the dict (what Gluon's save_parameters writes), atomically (temp file + rename)."""
    import mxnet as mx

    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".params", dir=d)
    os.close(fd)
    try:
        mx.nd.save(tmp, {k: mx.nd.array(v, dtype="float32") for k, v in sorted(arrays.items())})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ----------------------------------------------------------------------------------------------------
# the two directions


def import_kogpt2_v1(params_path: str, tokenizer_path: str, out: str, num_heads: Optional[int] = None,
                     config_path: Optional[str] = None, overrides: Sequence[str] = (),
                     weights_only: bool = False) -> str:
    """KoGPT2 v1 `.params` + its `.spiece` -> a checkpoint at `out` (local dir or s3://). Returns its location.

    With `config_path`, the file's sizes must be the config's model (else ConvertError naming both), the
    heads come from model.num_heads and `checkpoint.s3` is used for an s3:// `out`.
    """
    from corpus.tokenizer import Tokenizer, TokenizerError
    from pretrain.checkpoint import parse_step, split_location, write_checkpoint

    cfg = load_config(config_path, overrides) if (config_path or overrides) else None
    try:
        tok = Tokenizer.load(tokenizer_path)
    except TokenizerError as e:
        raise ConvertError(f"--tokenizer {tokenizer_path}: {e}") from None
    raw = read_v1_params(params_path)
    sizes = infer_sizes(raw, params_path)
    check_layout(raw, sizes, params_path)
    L, U, V, T, F = (sizes[k] for k in ("num_layers", "units", "vocab", "max_length", "hidden"))
    cfg_model = cfg.model if cfg is not None else None
    if cfg_model is not None:   # sizes first: a file of another size is the likelier mistake than the heads
        check_against_config(sizes, num_heads or cfg_model.num_heads, cfg_model,
                             cfg_model.vocab_size or tok.vocab_size, params_path, config_path or "--set")
    heads, preset = resolve_heads(sizes, num_heads, cfg_model, params_path)
    if tok.vocab_size > V:
        raise ConvertError(f"--tokenizer {tokenizer_path} has {tok.vocab_size} pieces but {params_path} embeds "
                           f"only {V}: they do not belong together (KoGPT2 v1's .spiece has 50000 pieces)")
    if tok.vocab_size < V:
        log.warning("%s has %d pieces, %s embeds %d: set model.vocab_size: %d in the training config", tokenizer_path,
                    tok.vocab_size, params_path, V, V)
    weights = v1_to_neutral(raw, L)
    optimizer = {} if weights_only else {f"{k}.{n}": np.zeros_like(w) for n, w in weights.items()
                                         for k in ("exp_avg", "exp_avg_sq")}
    model = ModelConfig(preset=preset, num_layers=L, units=U, num_heads=heads, max_length=T, hidden_size=F,
                        vocab_size=V)
    if cfg_model is not None:
        model.dropout, model.layer_norm_eps = cfg_model.dropout, cfg_model.layer_norm_eps
    state: dict[str, Any] = {
        "format": STATE_FORMAT, "step": 0, "tokens_seen": 0, "sample_cursor": 0,
        "engine": KOGPT2_V1,          # who wrote the weights; neither engine's RNG stream (they restart it)
        "world_size": None, "rng": {}, "loss_scale": None, "skipped_steps": 0,
        "optimizer": {"step": 0},     # AdamW step count 0: zero moments are a fresh optimizer
        "tokenizer_sha256": tok.sha256,
        "model": dict(asdict(model), tie_embeddings=True),
        "config": to_dict(cfg) if cfg is not None else {},
        "imported_from": {"format": KOGPT2_V1, "file": os.path.basename(params_path),
                          "sha256": sha256_file(params_path), "tokenizer": os.path.basename(tokenizer_path),
                          "weights_only": weights_only},
    }
    s3cfg = cfg.checkpoint.s3 if cfg is not None else S3Config()
    _, name = split_location(out)
    tmp = tempfile.mkdtemp(prefix="kogpt2-tok-")
    try:
        tok.save(tmp)             # spm.model (the .spiece bytes, same sha256), spm.vocab, tokenizer.json
        loc = write_checkpoint(out, weights, optimizer, state, tmp, s3cfg,
                               update_latest=parse_step(name) is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_params = sum(int(w.size) for w in weights.values())
    log.info("wrote %s: KoGPT2 v1 with %s, %.1f M parameters (%.1f MB fp32)%s", loc,
             describe(L, U, V, T, F, heads), n_params / 1e6, 4 * n_params / 1e6,
             ", no optimizer state (init_from only)" if weights_only else ", zero AdamW moments")
    return loc


def export_kogpt2_v1(checkpoint: str, out: str, spiece_out: Optional[str] = None,
                     s3cfg: Optional[S3Config] = None) -> tuple[str, Optional[str]]:
    """A checkpoint (step dir or root, local or s3://) -> KoGPT2 v1 `.params` at `out`, and its tokenizer
    copied to `spiece_out` (default: `out` with the suffix `.spiece`). Returns (params path, spiece path)."""
    from pretrain.checkpoint import load_checkpoint
    from pretrain.generate.inference import fetch_tokenizer

    ck = load_checkpoint(checkpoint, s3cfg)
    arrays = neutral_to_v1(ck.weights, ck.location)
    write_v1_params(arrays, out)
    sizes = infer_sizes(arrays, out)
    L, U, V, T, F = (sizes[k] for k in ("num_layers", "units", "vocab", "max_length", "hidden"))
    heads = (ck.state.get("model") or {}).get("num_heads")
    log.info("wrote %s: step %s, %s", out, ck.step, describe(L, U, V, T, F, heads))
    if (L, U, T, F, heads) != (12, 768, 1024, 3072, 12) or V != 50000:
        log.warning("KoGPT2 v1 tools hard-code its base config (12 layers, 768 units, 12 heads, vocab 50000, "
                    "max length 1024); this model differs: give those tools its sizes")
    spiece = spiece_out or str(Path(out).with_suffix(".spiece"))
    tmp = tempfile.mkdtemp(prefix="kogpt2-tok-")
    try:
        tok = fetch_tokenizer(ck.location, tmp, s3cfg)
        shutil.copyfile(tok.model_path, spiece)
    except FileNotFoundError as e:
        log.warning("%s; no .spiece written", e)
        return out, None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s: the SentencePiece model (%d pieces) to load with gluonnlp's "
             "BERTVocab.from_sentencepiece", spiece, tok.vocab_size)
    return out, spiece


# ----------------------------------------------------------------------------------------------------
# CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    from common.log import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m pretrain.convert", description=__doc__.split("\n")[0],
        epilog="import: --from kogpt2-v1 PARAMS --tokenizer SPIECE --out CHECKPOINT_DIR; "
               "export: --checkpoint CKPT --to kogpt2-v1 OUT.params")
    p.add_argument("--from", dest="src", nargs=2, metavar=("FORMAT", "PARAMS"),
                   help=f"import: FORMAT is {KOGPT2_V1}, PARAMS its mxnet_kogpt2_*.params file")
    p.add_argument("--tokenizer", help="import: the KoGPT2 .spiece file (or any tokenizer this project loads)")
    p.add_argument("--out", help="import: the checkpoint directory to write (local or s3://), e.g. "
                                 "work/kogpt2/step_00000000 (a step_N name also updates <parent>/latest)")
    p.add_argument("--num-heads", type=int, help="import: attention heads, when neither --config nor a preset says")
    p.add_argument("--weights-only", action="store_true",
                   help="import: leave out the zero optimizer moments (then only checkpoint.init_from can use it)")
    p.add_argument("--to", nargs=2, metavar=("FORMAT", "OUT"), help=f"export: FORMAT is {KOGPT2_V1}, OUT a .params path")
    p.add_argument("--checkpoint", help="export: a step directory or a checkpoint root (newest complete one), "
                                        "local or s3://")
    p.add_argument("--spiece-out", help="export: where to copy the tokenizer (default: OUT with suffix .spiece)")
    p.add_argument("--config", help="a run config: import checks the file's sizes against model.*; both use "
                                    "checkpoint.s3 for s3:// paths")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        if bool(args.src) == bool(args.to):
            p.error("give exactly one of --from kogpt2-v1 PARAMS (import) or --to kogpt2-v1 OUT (export)")
        fmt = (args.src or args.to)[0]
        if fmt != KOGPT2_V1:
            p.error(f"format {fmt!r}: only {KOGPT2_V1} is supported (python -m pretrain.export --to hf for "
                    "Hugging Face)")
        if args.src:
            if not args.tokenizer or not args.out:
                p.error("import needs --tokenizer SPIECE (KoGPT2's kogpt2_*.spiece) and --out CHECKPOINT_DIR")
            import_kogpt2_v1(args.src[1], args.tokenizer, args.out, args.num_heads, args.config, args.overrides,
                             args.weights_only)
        else:
            if not args.checkpoint:
                p.error("export needs --checkpoint PATH (a step directory or a checkpoint root)")
            cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
            export_kogpt2_v1(args.checkpoint, args.to[1], args.spiece_out,
                             cfg.checkpoint.s3 if cfg is not None else None)
    except (ConvertError, ConfigError, CheckpointError, StorageError) as e:   # messages carry the fix
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
