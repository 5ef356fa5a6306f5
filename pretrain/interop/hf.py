"""Export a checkpoint to a Hugging Face `GPT2LMHeadModel` directory, and import one back.

    python -m pretrain.export --checkpoint work/run/checkpoints --to hf out/kogpt2-hf
    python -m pretrain.export --from hf out/kogpt2-hf --out work/imported/step_00000000

The exported directory loads with `transformers` and no custom code:
    model = GPT2LMHeadModel.from_pretrained(dir); tok = AutoTokenizer.from_pretrained(dir)
- config.json: GPT2Config, `activation_function: gelu` (the exact erf GELU this model trains with),
  `layer_norm_epsilon`, bos/eos/pad ids from the tokenizer;
- model.safetensors: HF names; HF's GPT-2 uses Conv1D layers that store (in, out), so every dense
  weight is transposed; `c_attn` is our `qkv` (same q|k|v row order); `lm_head` is tied to `wte`;
- tokenizer: `tokenizer.json` (a fast tokenizer converted from the SentencePiece model), `spm.model`
  (the original), and our own tokenizer metadata as `kogpt_tokenizer.json`. It follows the project's
  convention (docs/CONTRACTS.md "One convention"): `tok(text).input_ids` is `[<s>] + encode(text)`,
  the input every document had in training (`add_special_tokens=False`: exactly `encode(text)`); no
  `</s>` is appended. Ids equal SentencePiece's for any text, user-defined symbols (`<mask>`,
  `<unused*>`, `\n`) inside it included, and the model's normalization rule (KoGPT2's nmt_nfkc, extra
  spaces removed) applied, with one exception: a text that is nothing but one user-defined symbol
  (`"\n"`, `"<mask>"`) lacks SentencePiece's leading `▁` piece. Control tokens written in text
  (`"</s>"`, `"<s>"`) are text, as in SentencePiece (`split_special_tokens`); where `<s>`/`</s>` are
  user-defined pieces (KoGPT2's .spiece) both match them in text, and then HF also matches a written
  `<pad>`/`<unk>`, which SentencePiece does not;
- generation_config.json: bos/eos/pad ids, greedy decoding by default, at most 64 new tokens, and
  `suppress_tokens` = the ids `pretrain.generate` never emits (<unk> <s> <pad> <mask> <unused*>), so
  `pipeline('text-generation')` gives the same greedy tokens as `pretrain.generate --greedy`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from common.log import setup_logging

log = logging.getLogger("pretrain.export")

META_NAME = "kogpt_tokenizer.json"     # our tokenizer.json, renamed: HF owns tokenizer.json there
_DENSE = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


# ----------------------------------------------------------------------------------------------------
# tensor name mapping


def num_layers_of(weights: dict[str, Any]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("h."))


def _hf_names(num_layers: int) -> list[tuple[str, str, bool]]:
    """(our name, HF name without `transformer.`, transposed) for every tensor of a GPT-2: HF's
    Conv1D stores dense weights (in, out), ours (out, in)."""
    names = [(n, n, False) for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]
    for i in range(num_layers):
        names += [(f"h.{i}.{ln}.{p}", f"h.{i}.{ln}.{p}", False) for ln in ("ln_1", "ln_2") for p in ("weight", "bias")]
        for ours, hf in _DENSE.items():
            names += [(f"h.{i}.{ours}.weight", f"h.{i}.{hf}.weight", True), (f"h.{i}.{ours}.bias", f"h.{i}.{hf}.bias", False)]
    return names


def to_hf_state_dict(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Engine-neutral weights -> HF GPT2LMHeadModel names (Conv1D weights transposed to (in, out))."""
    return {f"transformer.{hf}": np.ascontiguousarray(weights[ours].T if t else weights[ours], dtype=np.float32)
            for ours, hf, t in _hf_names(num_layers_of(weights))}


def from_hf_state_dict(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF GPT-2 tensors (with or without the `transformer.` prefix) -> engine-neutral weights."""
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in sd.items()}
    if "lm_head.weight" in sd and not np.array_equal(sd["lm_head.weight"], sd["wte.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight: this model's output layer is tied to the "
                         "token embedding, an untied checkpoint cannot be imported")
    return {ours: np.ascontiguousarray(sd[hf].T if t else sd[hf], dtype=np.float32)
            for ours, hf, t in _hf_names(num_layers_of(sd))}


# ----------------------------------------------------------------------------------------------------
# tokenizer conversion


def hf_tokenizer_from_spm(spm_file: str | Path):
    """A `PreTrainedTokenizerFast` equivalent to the SentencePiece BPE model (byte fallback kept).

    SentencePiece prepends one `▁` to the whole text (add_dummy_prefix), turns spaces into `▁`, then
    matches the user-defined symbols verbatim and runs BPE on the rest; control symbols written in the
    text are plain characters. Here: user-defined pieces are *normalized* added tokens, so they are
    matched in the normalized text and the dummy `▁` goes to the text's start only (not after every
    symbol, which a per-section `Prepend` would do); the normalizer leaves a string that is exactly
    one symbol alone, because transformers normalizes the symbols' own text with it too (hence the
    one documented difference: such a text gets no leading `▁`). Control pieces are special tokens
    that text never produces (`split_special_tokens=True`); the post-processor prepends `<s>`.
    """
    import re

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    proto = pb.ModelProto()
    proto.ParseFromString(Path(spm_file).read_bytes())
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise ValueError(f"{spm_file}: only SentencePiece BPE models are converted (this one is "
                         f"{pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)})")
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    vocab, merges = SentencePieceExtractor(str(spm_file)).extract()
    unk = sp.id_to_piece(sp.unk_id())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True,
                               byte_fallback=proto.trainer_spec.byte_fallback))
    T = pb.ModelProto.SentencePiece
    user = [p.piece for p in proto.pieces if p.type == T.USER_DEFINED]
    ns, norm = proto.normalizer_spec, []
    if ns.precompiled_charsmap:     # a normalization rule (e.g. nmt_nfkc in KoGPT2's .spiece; ours: identity)
        norm.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:  # SentencePiece: strip, then runs of spaces -> one (ours keep them)
        norm += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if proto.normalizer_spec.add_dummy_prefix:
        # "▁" at the very start, unless the string is exactly one user-defined symbol (see above)
        alt = "|".join(re.escape(u) for u in sorted(user, key=len, reverse=True))
        norm.append(normalizers.Replace(Regex(rf"\A(?!(?:{alt})\z)" if alt else r"\A"), "▁"))
    tok.normalizer = normalizers.Sequence(norm + [normalizers.Replace(" ", "▁")])
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    dummy = proto.normalizer_spec.add_dummy_prefix
    tok.decoder = decoders.Sequence(dec + ([decoders.Strip(content=" ", left=1, right=0)] if dummy else []))
    tok.add_tokens([AddedToken(p.piece, special=p.type in (T.CONTROL, T.UNKNOWN),
                               normalized=p.type == T.USER_DEFINED)
                    for p in proto.pieces if p.type in (T.CONTROL, T.UNKNOWN, T.USER_DEFINED)])

    from corpus.tokenizer import Tokenizer as SpTokenizer
    ids = SpTokenizer(spm_file)   # special ids, by piece where SentencePiece has no control id (KoGPT2's)

    def piece(i: Optional[int]) -> Optional[str]:
        return sp.id_to_piece(i) if i is not None and i >= 0 else None

    bos = piece(ids.bos_id)
    if bos is not None:   # the convention: every sequence starts with <s>, as every training document does
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, ids.bos_id)])
    # <mask> stays an ordinary added token (matched in text, decoded as text), as in SentencePiece.
    # split_special_tokens: SentencePiece never matches control pieces in text, so neither does this,
    # unless <s>/</s> are user-defined pieces (KoGPT2's .spiece), which SentencePiece does match.
    specials = [i for i in (ids.bos_id, ids.eos_id, ids.pad_id, ids.unk_id) if i is not None]
    user_specials = any(proto.pieces[i].type == T.USER_DEFINED for i in specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, bos_token=bos,
                                   eos_token=piece(ids.eos_id), pad_token=piece(ids.pad_id),
                                   clean_up_tokenization_spaces=False, split_special_tokens=not user_specials)


def hf_generation_config(tok: Any, max_new_tokens: int = 64):
    """GenerationConfig reproducing `pretrain.generate --greedy`: stop at </s>, never emit the ids it bans."""
    from transformers import GenerationConfig

    from pretrain.generate import non_text_ids

    return GenerationConfig(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                            do_sample=False, max_new_tokens=max_new_tokens,
                            suppress_tokens=[int(i) for i in non_text_ids(tok)] or None)


# ----------------------------------------------------------------------------------------------------
# export / import


def hf_config(weights: dict[str, np.ndarray], num_heads: int, layer_norm_eps: float, special: dict[str, int]):
    """GPT2Config for these weights; sizes from the tensor shapes, dropout 0.1 (GPT-2's)."""
    from transformers import GPT2Config
    V, U = weights["wte.weight"].shape
    return GPT2Config(vocab_size=int(V), n_positions=int(weights["wpe.weight"].shape[0]), n_embd=int(U),
                      n_layer=num_layers_of(weights), n_head=int(num_heads),
                      n_inner=int(weights["h.0.mlp.fc.weight"].shape[0]), activation_function="gelu",
                      layer_norm_epsilon=float(layer_norm_eps), bos_token_id=special.get("bos"),
                      eos_token_id=special.get("eos"), pad_token_id=special.get("pad"),
                      tie_word_embeddings=True, architectures=["GPT2LMHeadModel"])


def export_hf(checkpoint: str, out_dir: str, s3cfg=None, tokenizer: Optional[str] = None) -> Path:
    """Write `out_dir` as a transformers GPT2LMHeadModel directory from a checkpoint (step dir or root)."""
    from safetensors.numpy import save_file

    from corpus.tokenizer import Tokenizer
    from pretrain.checkpoint import load_checkpoint
    from pretrain.generate.inference import fetch_tokenizer, model_config_from_state

    ck = load_checkpoint(checkpoint, s3cfg)
    mcfg = model_config_from_state(ck.state, ck.location)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kogpt-export-") as tmp:
        tok = Tokenizer.load(tokenizer) if tokenizer else fetch_tokenizer(ck.location, tmp, s3cfg)
        V = ck.weights["wte.weight"].shape[0]
        if tok.vocab_size > V:
            raise ValueError(f"tokenizer has {tok.vocab_size} pieces but {ck.location} embeds {V}")
        hf_tok = hf_tokenizer_from_spm(tok.model_path)
        hf_tok.model_max_length = int(ck.weights["wpe.weight"].shape[0])   # the context, for truncation
        hf_tok.save_pretrained(str(out))
        shutil.copyfile(tok.model_path, out / "spm.model")
        (out / META_NAME).write_text(json.dumps(dict(tok.meta, model_file="spm.model"), indent=2,
                                                ensure_ascii=False) + "\n", encoding="utf-8")
        gen = hf_generation_config(tok)
    cfg = hf_config(ck.weights, mcfg.num_heads, mcfg.layer_norm_eps, tok.special_ids)
    cfg.save_pretrained(str(out))
    gen.save_pretrained(str(out))
    save_file(to_hf_state_dict(ck.weights), str(out / "model.safetensors"), metadata={"format": "pt"})
    log.info("exported %s (step %d) to %s: %d layers, %d units, vocab %d", ck.location, ck.step, out,
             cfg.n_layer, cfg.n_embd, cfg.vocab_size)
    return out


def import_hf(in_dir: str, out_location: str, s3cfg=None) -> str:
    """Write a step-0 checkpoint (fresh optimizer) at `out_location` from an HF GPT-2 directory."""
    from safetensors.numpy import load_file

    from pretrain.checkpoint import write_checkpoint

    d = Path(in_dir)
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d}/model.safetensors not found: import reads safetensors only (convert a "
                                "pytorch_model.bin with `GPT2LMHeadModel.from_pretrained(d).save_pretrained(d)`)")
    conf = json.loads((d / "config.json").read_text("utf-8"))
    if conf.get("activation_function", "gelu_new") != "gelu":
        log.warning("%s uses activation_function=%s; this model uses the exact erf GELU ('gelu'), so its "
                    "logits will differ slightly from the original's", d, conf.get("activation_function"))
    weights = from_hf_state_dict(load_file(str(d / "model.safetensors")))
    V, U = weights["wte.weight"].shape
    model = {"num_layers": num_layers_of(weights), "units": int(U), "num_heads": int(conf["n_head"]),
             "max_length": int(weights["wpe.weight"].shape[0]),
             "hidden_size": int(weights["h.0.mlp.fc.weight"].shape[0]), "vocab_size": int(V),
             "layer_norm_eps": float(conf.get("layer_norm_epsilon", 1e-5)),
             "dropout": float(conf.get("resid_pdrop", 0.1)), "tie_embeddings": True}
    optimizer = {f"{k}.{n}": np.zeros_like(w) for n, w in weights.items() for k in ("exp_avg", "exp_avg_sq")}
    with tempfile.TemporaryDirectory(prefix="kogpt-import-") as tmp:
        tok_dir, sha = None, None
        if (d / "spm.model").is_file():
            from corpus.tokenizer import Tokenizer
            meta = d / META_NAME
            tok = Tokenizer.load(d / "spm.model") if not meta.is_file() else None
            if tok is None:     # our metadata came along: restore the tokenizer directory as written
                shutil.copyfile(d / "spm.model", Path(tmp) / "spm.model")
                shutil.copyfile(meta, Path(tmp) / "tokenizer.json")
                tok = Tokenizer.load(tmp)
            else:
                tok.save(tmp)
            tok_dir, sha = tmp, tok.sha256
        else:
            log.warning("%s has no spm.model: the checkpoint gets no tokenizer/ folder; pass the "
                        "SentencePiece model as tokenizer.dir when training from it", d)
        state = {"step": 0, "tokens_seen": 0, "sample_cursor": 0, "engine": "hf-import", "world_size": 1,
                 "rng": {}, "loss_scale": 1.0, "skipped_steps": 0, "tokenizer_sha256": sha,
                 "optimizer": {"step": 0}, "model": model, "config": {"imported_from": str(d)}}
        loc = write_checkpoint(out_location, weights, optimizer, state, tok_dir, s3cfg)
    log.info("imported %s into %s (%d layers, %d units, vocab %d)", d, loc, model["num_layers"], U, V)
    return loc


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint step directory or root (local or s3://) to export")
    ap.add_argument("--to", nargs=2, metavar=("FORMAT", "OUT_DIR"), help="export: `--to hf OUT_DIR`")
    ap.add_argument("--from", dest="src", nargs=2, metavar=("FORMAT", "IN_DIR"), help="import: `--from hf IN_DIR`")
    ap.add_argument("--out", help="import: checkpoint location to write (…/step_00000000, local or s3://)")
    ap.add_argument("--tokenizer", help="export: tokenizer dir/file instead of the checkpoint's tokenizer/")
    ap.add_argument("--config", help="YAML whose checkpoint.s3 section configures s3:// access")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of --config, e.g. checkpoint.s3.endpoint_url=http://minio:9000")
    args = ap.parse_args(argv)
    setup_logging()
    s3cfg = None
    if args.config or args.set:
        from common.config import ConfigError, load_config
        try:
            s3cfg = load_config(args.config, args.set).checkpoint.s3
        except ConfigError as e:
            ap.exit(2, f"config error: {e}\n")
    if args.to and args.checkpoint and not args.src:
        if args.to[0] != "hf":
            ap.error(f"--to {args.to[0]}: only `hf` is supported")
        export_hf(args.checkpoint, args.to[1], s3cfg, args.tokenizer)
        return 0
    if args.src and args.out and not args.to:
        if args.src[0] != "hf":
            ap.error(f"--from {args.src[0]}: only `hf` is supported")
        import_hf(args.src[1], args.out, s3cfg)
        return 0
    ap.error("use `--checkpoint PATH --to hf OUT_DIR` (export) or `--from hf IN_DIR --out CHECKPOINT` (import)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
