"""KoGPT2 v1 import/export (pretrain/interop/kogpt2.py) against a reference network written here.

The reference is KoGPT2 v1's GluonNLP GPT2Model re-written as Gluon blocks with exactly its parameter
layout (`_embed`, `_pos_embed`, `_logits_proj` sharing `_embed`'s weight, `_self_attention_layers.{i}.
_multi_head_qkv_proj`, ...), tiny sizes, saved with `save_parameters` -- no download. Its forward pass is
written independently of the project's engines (explicit causal mask, erf GELU from `mx.nd.erf`), so
equal logits mean the renaming, the qkv row order and the tied projection are right.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import sentencepiece as spm  # noqa: E402

from common.config import load_config  # noqa: E402
from common.io import read_json, sha256_file  # noqa: E402
from corpus.shards import TokenShards, build_shards  # noqa: E402
from corpus.tokenizer import Tokenizer  # noqa: E402
from pretrain.checkpoint import load_checkpoint  # noqa: E402
from pretrain.convert import ConvertError, export_kogpt2_v1, import_kogpt2_v1, main  # noqa: E402
from test_tokenizer import SENTENCES, make_docs, write_clean_dir  # noqa: E402

# the `tiny` preset: 2 layers, 64 units, 4 heads, max length 64
L, U, H, T = 2, 64, 4, 64
KOGPT2_SPECIALS = dict(unknown_token="<unk>", padding_token="<pad>", bos_token="<s>", eos_token="</s>",
                       mask_token=None, sep_token=None, cls_token=None)


# ----------------------------------------------------------------------------------------------------
# the reference KoGPT2 v1 network (GluonNLP layout)


class RefSelfAttention(gluon.Block):
    def __init__(self, units: int, num_heads: int, **kw):
        super().__init__(**kw)
        self._units, self._heads = units, num_heads
        with self.name_scope():
            self._multi_head_qkv_proj = nn.Dense(3 * units, in_units=units, flatten=False)
            self._out_proj = nn.Dense(units, in_units=units, flatten=False)

    def forward(self, x):                                   # x (B, T, U)
        B, S, _ = x.shape
        Hh, D = self._heads, self._units // self._heads
        q, k, v = mx.nd.split(self._multi_head_qkv_proj(x), num_outputs=3, axis=2)     # 3 x (B, T, U)

        def heads(t):                                       # (B, T, U) -> (B*H, T, D), heads consecutive
            return t.reshape((B, S, Hh, D)).transpose((0, 2, 1, 3)).reshape((B * Hh, S, D))

        scores = mx.nd.batch_dot(heads(q), heads(k), transpose_b=True) / math.sqrt(D)   # (B*H, T, T)
        causal = mx.nd.array(np.tril(np.ones((S, S), dtype=np.float32)))               # 1 where key <= query
        scores = mx.nd.where(mx.nd.broadcast_to(causal.expand_dims(0), scores.shape), scores,
                             mx.nd.full(scores.shape, -1e30))
        ctx = mx.nd.batch_dot(mx.nd.softmax(scores, axis=-1), heads(v))                 # (B*H, T, D)
        ctx = ctx.reshape((B, Hh, S, D)).transpose((0, 2, 1, 3)).reshape((B, S, Hh * D))
        return self._out_proj(ctx)


class RefFFN(gluon.Block):
    def __init__(self, units: int, hidden: int, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self._hidden_map = nn.Dense(hidden, in_units=units, flatten=False)
            self._out_map = nn.Dense(units, in_units=hidden, flatten=False)

    def forward(self, x):
        h = self._hidden_map(x)
        h = 0.5 * h * (1.0 + mx.nd.erf(h / math.sqrt(2.0)))      # exact GELU
        return self._out_map(h)


class RefKoGPT2(gluon.Block):
    """KoGPT2 v1 (GluonNLP GPT2Model): pre-LN blocks, learned positions, logits through the tied embedding."""

    def __init__(self, vocab: int, units: int = U, num_layers: int = L, num_heads: int = H, max_length: int = T,
                 **kw):
        super().__init__(**kw)
        with self.name_scope():
            self._pos_embed = nn.Embedding(max_length, units)
            self._embed = nn.Embedding(vocab, units)
            self._logits_proj = nn.Dense(vocab, in_units=units, use_bias=False, flatten=False,
                                         params=self._embed.params)
            self._self_attention_layers = nn.Sequential()
            self._ffn_layers = nn.Sequential()
            self._attn_ln = nn.Sequential()
            self._ffn_ln = nn.Sequential()
            for _ in range(num_layers):
                self._self_attention_layers.add(RefSelfAttention(units, num_heads))
                self._ffn_layers.add(RefFFN(units, 4 * units))
                self._attn_ln.add(nn.LayerNorm(in_channels=units))      # Gluon's default epsilon 1e-5
                self._ffn_ln.add(nn.LayerNorm(in_channels=units))
            self._final_ln = nn.LayerNorm(in_channels=units)

    def forward(self, ids):                                  # ids (B, T) -> logits (B, T, V)
        pos = mx.nd.arange(ids.shape[1])
        x = self._embed(ids) + self._pos_embed(pos).expand_dims(0)
        for attn, ffn, ln1, ln2 in zip(self._self_attention_layers, self._ffn_layers, self._attn_ln, self._ffn_ln):
            x = x + attn(ln1(x))
            x = x + ffn(ln2(x))
        return self._logits_proj(self._final_ln(x))


def make_reference(vocab: int, seed: int, **sizes) -> RefKoGPT2:
    """A reference network with every parameter random (LayerNorm gains and biases too)."""
    net = RefKoGPT2(vocab, **sizes)
    net.initialize()
    rng = np.random.default_rng(seed)
    for name, p in net.collect_params().items():
        base = 1.0 if name.endswith("gamma") else 0.0
        p.set_data(mx.nd.array(base + rng.normal(0, 0.1, size=p.shape).astype(np.float32)))
    return net


def ref_logits(net: RefKoGPT2, ids: np.ndarray) -> np.ndarray:
    return net(mx.nd.array(ids, dtype="int32")).asnumpy()


# ----------------------------------------------------------------------------------------------------
# fixtures


def train_kogpt2_style_spiece(d: Path, vocab: int = 700) -> Path:
    """A SentencePiece BPE model with KoGPT2 v1's special pieces, saved as `.spiece`.

    KoGPT2 v1 builds its vocab with `BERTVocab.from_sentencepiece(..., unknown_token='<unk>',
    padding_token='<pad>', bos_token='<s>', eos_token='</s>')`; here `<unk>`/`<pad>` are SentencePiece's
    unk/pad ids and `<s>`/`</s>` plain pieces, so every reader has to look them up by piece.
    """
    d.mkdir(parents=True, exist_ok=True)
    (d / "sent.txt").write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(d / "sent.txt"), model_prefix=str(d / "kogpt2_test"), model_type="bpe",
                                   vocab_size=vocab, byte_fallback=True, unk_id=0, pad_id=1,
                                   bos_id=-1, eos_id=-1, user_defined_symbols=["<s>", "</s>"], minloglevel=2,
                                   num_threads=1)
    spiece = d / "kogpt2_test.spiece"
    (d / "kogpt2_test.model").rename(spiece)
    (d / "kogpt2_test.vocab").unlink()
    return spiece


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(root, spiece, tokenizer, params file, reference network) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("kogpt2")
    spiece = train_kogpt2_style_spiece(root / "tok")
    tok = Tokenizer.load(spiece)
    net = make_reference(tok.vocab_size, seed=0)
    params = root / "mxnet_kogpt2_test.params"
    net.save_parameters(str(params))
    return root, spiece, tok, params, net


@pytest.fixture(scope="module")
def imported(env):
    root, spiece, _, params, _ = env
    out = root / "ckpt" / "step_00000000"
    assert main(["--from", "kogpt2-v1", str(params), "--tokenizer", str(spiece), "--out", str(out)]) == 0
    return out


def ids_for(tok: Tokenizer, n: int = T) -> np.ndarray:
    """Two rows of real token ids, n long (the encoded test sentences, repeated)."""
    flat = [i for s in SENTENCES for i in tok.encode(s)]
    return np.array([flat[:n], flat[n:2 * n]], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# the file and the mapping


def test_fixture_has_the_kogpt2_v1_layout(env):
    *_, params, _ = env
    saved = mx.nd.load(str(params))
    V = env[2].vocab_size
    assert saved["_embed.weight"].shape == saved["_logits_proj.weight"].shape == (V, U)
    assert saved["_pos_embed.weight"].shape == (T, U)
    assert saved["_self_attention_layers.1._multi_head_qkv_proj.weight"].shape == (3 * U, U)
    assert saved["_ffn_layers.0._out_map.weight"].shape == (U, 4 * U)
    assert {"_attn_ln.1.gamma", "_ffn_ln.0.beta", "_final_ln.gamma"} <= set(saved)
    assert len(saved) == 4 + 12 * L + 1
    assert np.array_equal(saved["_embed.weight"].asnumpy(), saved["_logits_proj.weight"].asnumpy())


@pytest.mark.parametrize("engine", ["mxnet", "torch"])
def test_converted_logits_equal_reference(env, imported, engine):
    if engine == "torch":
        pytest.importorskip("torch")
    from pretrain.generate.inference import load_model
    _, spiece, tok, _, net = env
    lm = load_model(str(imported), engine=engine)
    assert lm.tokenizer.sha256 == sha256_file(spiece) and lm.step_count == 0
    assert (lm.model_cfg.num_layers, lm.model_cfg.units, lm.model_cfg.num_heads, lm.model_cfg.max_length) == (L, U, H, T)
    ids = ids_for(tok)
    want = ref_logits(net, ids)
    got, _ = lm.step(ids)
    assert got.shape == want.shape == (2, T, tok.vocab_size)
    assert np.abs(want).max() > 0.5            # logits of a real size, not ~0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the kv cache continues the same network: the last position again, after T-1 cached ones
    _, past = lm.step(ids[:, :-1])
    nxt, _ = lm.step(ids[:, -1:], past)
    np.testing.assert_allclose(nxt[:, 0], want[:, -1], rtol=1e-5, atol=1e-5)


def test_checkpoint_is_a_fresh_start(env, imported):
    _, spiece, tok, params, _ = env
    ck = load_checkpoint(str(imported))
    st = ck.state
    assert (st["step"], st["tokens_seen"], st["sample_cursor"], st["optimizer"]["step"]) == (0, 0, 0, 0)
    assert st["tokenizer_sha256"] == sha256_file(spiece) == tok.sha256
    assert st["model"]["preset"] == "tiny" and st["model"]["vocab_size"] == tok.vocab_size
    assert st["imported_from"]["sha256"] == sha256_file(params)
    assert set(ck.optimizer) == {f"{k}.{n}" for n in ck.weights for k in ("exp_avg", "exp_avg_sq")}
    assert all(not a.any() for a in ck.optimizer.values())
    assert (imported / "tokenizer" / "spm.model").read_bytes() == spiece.read_bytes()
    assert read_json(imported / "tokenizer" / "tokenizer.json")["vocab_size"] == tok.vocab_size
    assert (imported.parent / "latest").read_text().strip() == "step_00000000"


def test_round_trip_is_identical(env, imported, tmp_path):
    root, spiece, tok, params, net = env
    out = tmp_path / "export" / "mxnet_kogpt2_back.params"
    assert main(["--checkpoint", str(imported.parent), "--to", "kogpt2-v1", str(out)]) == 0
    a, b = mx.nd.load(str(params)), mx.nd.load(str(out))
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32
        assert np.array_equal(a[k].asnumpy(), b[k].asnumpy()), k
    assert out.with_suffix(".spiece").read_bytes() == spiece.read_bytes()
    # what a KoGPT2 v1 tool does: load_parameters (strict) into its network and run it
    fresh = RefKoGPT2(tok.vocab_size)
    fresh.load_parameters(str(out))
    ids = ids_for(tok)
    assert np.array_equal(ref_logits(fresh, ids), ref_logits(net, ids))
    # and back in again: the same tensors
    again = import_kogpt2_v1(str(out), str(out.with_suffix(".spiece")), str(tmp_path / "again"))
    w0, w1 = load_checkpoint(str(imported)).weights, load_checkpoint(again).weights
    assert set(w0) == set(w1) and all(np.array_equal(w0[k], w1[k]) for k in w0)


def test_weights_only_import(env, tmp_path):
    _, spiece, _, params, _ = env
    loc = import_kogpt2_v1(str(params), str(spiece), str(tmp_path / "w"), weights_only=True)
    ck = load_checkpoint(loc)
    assert ck.optimizer == {} and ck.state["imported_from"]["weights_only"] is True
    assert not (tmp_path / "latest").exists()        # "w" is not a step_N name: no latest pointer


# ----------------------------------------------------------------------------------------------------
# errors


def test_size_mismatch_with_config_names_both_sizes(env, tmp_path):
    _, spiece, _, params, _ = env
    with pytest.raises(ConvertError) as e:
        import_kogpt2_v1(str(params), str(spiece), str(tmp_path / "x"), config_path="configs/base.yaml")
    msg = str(e.value)
    assert "holds a model with 2 layers, 64 units" in msg and "(the tiny preset)" in msg
    assert "asks for 12 layers, 768 units, 12 heads" in msg and "set model.preset: tiny" in msg
    assert not (tmp_path / "x").exists()
    # the matching config is accepted, and its heads are the ones recorded
    loc = import_kogpt2_v1(str(params), str(spiece), str(tmp_path / "ok"), config_path="configs/tiny.yaml")
    assert load_checkpoint(loc).state["model"]["num_heads"] == H


def test_other_size_without_preset_needs_heads(env, tmp_path):
    _, spiece, tok, _, _ = env
    net = make_reference(tok.vocab_size, seed=1, units=48, num_layers=3, num_heads=3, max_length=40)
    p = tmp_path / "other.params"
    net.save_parameters(str(p))
    with pytest.raises(ConvertError, match=r"3 layers, 48 units, vocab \d+, max length 40 \(no preset.*--num-heads"):
        import_kogpt2_v1(str(p), str(spiece), str(tmp_path / "a"))
    loc = import_kogpt2_v1(str(p), str(spiece), str(tmp_path / "b"), num_heads=3)
    from pretrain.generate.inference import load_model
    lm = load_model(loc, engine="mxnet")
    ids = ids_for(tok, 40)
    np.testing.assert_allclose(lm.step(ids)[0], ref_logits(net, ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConvertError, match="does not divide"):
        import_kogpt2_v1(str(p), str(spiece), str(tmp_path / "c"), num_heads=5)


def _save(arrays: dict, path: Path) -> str:
    mx.nd.save(str(path), {k: mx.nd.array(v) for k, v in arrays.items()})
    return str(path)


@pytest.mark.parametrize("damage,pattern", [
    ("drop", r"missing _ffn_layers\.1\._out_map\.bias"),
    ("shape", r"_attn_ln\.0\.gamma has shape \(63,\), expected \(64,\)"),
    ("extra", r"unexpected _adapter\.weight"),
    ("untied", r"_logits_proj\.weight differs from _embed\.weight"),
    ("gap", r"layer indices \[0, 2\] are not 0\.\.L-1"),
])
def test_damaged_layouts_are_refused(env, tmp_path, damage, pattern):
    _, spiece, _, params, _ = env
    a = {k: v.asnumpy() for k, v in mx.nd.load(str(params)).items()}
    if damage == "drop":
        del a["_ffn_layers.1._out_map.bias"]
    elif damage == "shape":
        a["_attn_ln.0.gamma"] = a["_attn_ln.0.gamma"][:-1]
    elif damage == "extra":
        a["_adapter.weight"] = np.zeros((2, 2), np.float32)
    elif damage == "untied":
        a["_logits_proj.weight"] = a["_logits_proj.weight"] + 1
    elif damage == "gap":   # layer 1 renumbered to 2
        a = {k.replace(".1.", ".2."): v for k, v in a.items()}
    with pytest.raises(ConvertError, match=pattern):
        import_kogpt2_v1(_save(a, tmp_path / "bad.params"), str(spiece), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_wrong_files_are_refused(env, tmp_path, capfd):
    root, spiece, _, params, _ = env
    junk = tmp_path / "pytorch_kogpt2.params"
    junk.write_bytes(b"PK\x03\x04 not an mxnet file")
    with pytest.raises(ConvertError, match="not an MXNet NDArray file"):
        import_kogpt2_v1(str(junk), str(spiece), str(tmp_path / "o"))
    with pytest.raises(ConvertError, match="no such file"):
        import_kogpt2_v1(str(tmp_path / "nope.params"), str(spiece), str(tmp_path / "o"))
    other = make_reference(50, seed=2)              # vocab 50: fewer rows than the tokenizer has pieces
    other.save_parameters(str(tmp_path / "small_vocab.params"))
    with pytest.raises(ConvertError, match="do not belong together"):
        import_kogpt2_v1(str(tmp_path / "small_vocab.params"), str(spiece), str(tmp_path / "o"))
    with pytest.raises(ConvertError, match="--tokenizer"):
        import_kogpt2_v1(str(params), str(tmp_path / "missing.spiece"), str(tmp_path / "o"))
    capfd.readouterr()
    assert main(["--from", "kogpt2-v1", str(junk), "--tokenizer", str(spiece), "--out", str(tmp_path / "o")]) == 2
    assert "not an MXNet NDArray file (Check failed" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        main(["--from", "gpt2-hf", str(params), "--tokenizer", str(spiece), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        main(["--from", "kogpt2-v1", str(params), "--out", str(tmp_path / "o")])        # no --tokenizer
    assert main(["--checkpoint", str(tmp_path / "no_ckpt"), "--to", "kogpt2-v1", str(tmp_path / "x.params")]) == 2


def test_export_refuses_a_non_gpt2_checkpoint(tmp_path):
    from pretrain.checkpoint import write_checkpoint
    loc = write_checkpoint(str(tmp_path / "step_00000001"), {"w": np.zeros(3, np.float32)}, {}, {"step": 1}, None)
    with pytest.raises(ConvertError, match="no wte.weight"):
        export_kogpt2_v1(loc, str(tmp_path / "x.params"))


# ----------------------------------------------------------------------------------------------------
# KoGPT2's tokenizer in the pipeline: the shard stage and training continued from the import


@pytest.fixture(scope="module")
def shards(env):
    root, spiece, tok, _, _ = env
    write_clean_dir(root / "clean", make_docs(60, seed=3), parts=2)
    cfg = load_config("configs/tiny.yaml", [f"corpus.out_dir={root / 'clean'}", f"tokenizer.model={spiece}",
                                            f"shards.out_dir={root / 'shards'}", "shards.valid_fraction=0.2",
                                            "shards.workers=1"])
    return root / "shards", build_shards(cfg, workers=1)


def test_kogpt2_spiece_matches_gluonnlp_vocab(env):
    pytest.importorskip("gluonnlp")
    import gluonnlp as nlp
    _, spiece, tok, _, _ = env
    vocab = nlp.vocab.BERTVocab.from_sentencepiece(str(spiece), **KOGPT2_SPECIALS)   # as KoGPT2 v1 builds it
    assert len(vocab) == tok.vocab_size
    assert (vocab[vocab.unknown_token], vocab[vocab.padding_token], vocab[vocab.bos_token],
            vocab[vocab.eos_token]) == (tok.unk_id, tok.pad_id, tok.bos_id, tok.eos_id)
    text = SENTENCES[5]
    assert vocab[tok.gluonnlp_tokenizer()(text)] == tok.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_hf_tokenizer_of_the_spiece_matches_sentencepiece(env):
    """The HF export's tokenizer for a KoGPT2-style .spiece: its normalization (nmt_nfkc, extra spaces
    removed) applies, and its user-defined <s>/</s> are matched in text, as SentencePiece does; ids and
    decodes equal. Documented differences: a text that is exactly one user-defined symbol, and control
    pieces (<unk>, <pad>) written in text, which HF matches here."""
    pytest.importorskip("transformers")
    from pretrain.interop.hf import hf_tokenizer_from_spm

    _, spiece, tok, _, _ = env
    hf = hf_tokenizer_from_spm(spiece)
    for text in SENTENCES + ["  앞뒤  공백  ", "ㅋㅋㅋ ㅠㅠ", "ＡＢＣ１２３", "줄\n\n바꿈 ", "문장 하나</s>문장 둘</s>",
                             "<s>오늘", "😀 이모지", ""]:
        ids = tok.encode(text)
        assert hf(text, add_special_tokens=False).input_ids == ids, text
        assert hf(text).input_ids == [tok.bos_id] + ids, text
        assert hf.decode(ids) == tok.decode(ids), text
    assert tok.encode("<s>") == [tok.piece_id("▁"), tok.bos_id]                # exactly one symbol: the
    assert hf("<s>", add_special_tokens=False).input_ids == [tok.bos_id]          # documented difference


def test_shard_stage_accepts_the_spiece(env, shards):
    _, spiece, tok, _, _ = env
    d, m = shards
    assert m["tokenizer_sha256"] == sha256_file(spiece) and m["eos_id"] == tok.piece_id("</s>")
    assert m["vocab_size"] == tok.vocab_size
    # every document comes back as <s>, the ids the .spiece encodes it to (its own normalization applies), </s>
    want = {tok.decode(tok.encode(doc["text"])) for doc in make_docs(60, seed=3)}
    for split in ("train", "valid"):
        sh = TokenShards(d, split, tokenizer_sha256=tok.sha256)
        assert sh.num_docs == m["splits"][split]["docs"] > 0
        for i in range(sh.num_docs):
            ids = sh.document(i)
            assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
            assert tok.decode(ids[1:-1]) in want


@pytest.mark.parametrize("engine,how", [("mxnet", "init_from"), ("mxnet", "resume"), ("torch", "init_from"),
                                        ("torch", "resume")])
def test_training_continues_from_the_import(env, imported, shards, tmp_path, engine, how):
    """`checkpoint.init_from` / `checkpoint.resume` on the import: with lr 0 the weights must come out unchanged
    (so they were loaded, not initialised), and the run's own checkpoint carries on from the import."""
    if engine == "torch":
        pytest.importorskip("torch")
    from pretrain.train import main as train_main
    _, spiece, tok, _, _ = env
    run = tmp_path / "run"
    sets = [f"tokenizer.model={spiece}", f"train.shards={shards[0]}", f"train.out_dir={run}",
            f"checkpoint.root={run / 'checkpoints'}", f"train.engine={engine}", "train.max_steps=2",
            "train.eval_every=0", "train.eval_batches=1", "train.compile=false", "checkpoint.every_steps=2",
            "optim.lr=0", "optim.min_lr=0", "optim.warmup_steps=0", "log.tensorboard=false", "model.dropout=0"]
    sets += [f"checkpoint.init_from={imported}"] if how == "init_from" else [f"checkpoint.resume={imported}"]
    args = ["--config", "configs/tiny.yaml"] + [x for s in sets for x in ("--set", s)]
    assert train_main(args) == 0
    ck = load_checkpoint(str(run / "checkpoints"))
    src = load_checkpoint(str(imported))
    assert ck.step == 2 and ck.state["tokenizer_sha256"] == tok.sha256
    for k, w in src.weights.items():
        np.testing.assert_array_equal(ck.weights[k], w, err_msg=k)
