"""Generation: cached == uncached decoding in both engines, the engines agree, the KoGPT2-style API."""
import dataclasses

import numpy as np
import pytest

from common.schema import ModelConfig
from pretrain.checkpoint import write_checkpoint
from pretrain.generate import generate_ids, generate_text, main as generate_main
from pretrain.generate.inference import load_model
from pretrain.generate.sampling import SamplingConfig
from tests.train_fixtures import make_tokenizer, synthetic_docs

torch = pytest.importorskip("torch")
mx = pytest.importorskip("mxnet")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init tiny GPT-2 (with larger-than-default weights so greedy paths are not all one token)."""
    from pretrain.engines.torch.model import GPT2, GPT2Shape

    root = tmp_path_factory.mktemp("gen")
    tok = make_tokenizer(root / "tokenizer", synthetic_docs(200))
    cfg = ModelConfig(preset="tiny", dropout=0.0)
    torch.manual_seed(0)
    model = GPT2(GPT2Shape.from_config(cfg, tok.vocab_size))
    weights = {k: v.numpy() * (5.0 if k == "wte.weight" else 1.0) for k, v in model.state_dict().items()}
    state = {"step": 3, "model": dataclasses.asdict(cfg), "tokenizer_sha256": tok.sha256}
    loc = write_checkpoint(str(root / "ckpt" / "step_00000003"), weights, {}, state, str(root / "tokenizer"),
                           update_latest=True)
    return loc, root / "ckpt"


@pytest.mark.parametrize("engine", ["torch", "mxnet"])
def test_cached_decoding_matches_uncached(checkpoint, engine):
    lm = load_model(checkpoint[1], engine=engine)
    prompt = [lm.tokenizer.bos_id] + lm.tokenizer.encode("오늘 나는 책을")
    for sampling in (SamplingConfig(greedy=True), SamplingConfig(top_k=5, temperature=0.9)):
        cached = generate_ids(lm, prompt, 20, sampling, seed=3, use_cache=True, stop_at_eos=False)
        full = generate_ids(lm, prompt, 20, sampling, seed=3, use_cache=False, stop_at_eos=False)
        assert cached == full and len(cached) == 20


def test_engines_give_same_tokens_and_logits(checkpoint):
    a, b = load_model(checkpoint[0], engine="torch"), load_model(checkpoint[0], engine="mxnet")
    ids = np.random.default_rng(0).integers(0, a.tokenizer.vocab_size, size=(2, 16))
    np.testing.assert_allclose(a.step(ids)[0], b.step(ids)[0], atol=1e-4)
    prompt = [a.tokenizer.bos_id] + a.tokenizer.encode("어제 친구가")
    greedy = SamplingConfig(greedy=True)
    assert generate_ids(a, prompt, 15, greedy, stop_at_eos=False) == \
        generate_ids(b, prompt, 15, greedy, stop_at_eos=False)


def test_generation_stops_at_context_and_text_round_trips(checkpoint):
    lm = load_model(checkpoint[0], engine="torch")
    prompt = [lm.tokenizer.bos_id] + lm.tokenizer.encode("주말에")
    out = generate_ids(lm, prompt, 1000, SamplingConfig(greedy=True), stop_at_eos=False)
    assert len(prompt) + len(out) == lm.model_cfg.max_length
    text = generate_text(lm, "주말에 우리는", 5, SamplingConfig(greedy=True))
    assert text.startswith("주말에 우리는")
    with pytest.raises(ValueError, match="context"):
        generate_ids(lm, list(range(lm.model_cfg.max_length)), 1, SamplingConfig(greedy=True))


def test_generation_stops_at_eos_and_drops_it_from_the_text(checkpoint):
    """Greedy decoding from a model whose </s> logit is raised from the 4th new token on: the ids end
    with that </s> (nothing after it), the text leaves it out, and stop_at_eos=False goes on."""
    lm = load_model(checkpoint[0], engine="torch")
    eos, real_step = lm.tokenizer.eos_id, lm.step
    calls = []

    def step(ids, past=None):                   # the real model's logits, </s> boosted after 3 tokens
        logits, past = real_step(ids, past)
        calls.append(1)
        if len(calls) > 3:
            logits = logits.copy()
            logits[..., eos] += 1e4
        return logits, past

    lm.step = step
    prompt = [lm.tokenizer.bos_id] + lm.tokenizer.encode("주말에")
    new = generate_ids(lm, prompt, 20, SamplingConfig(greedy=True))
    assert len(new) == 4 and new[-1] == eos and eos not in new[:-1]
    calls.clear()
    text = generate_text(lm, "주말에", 20, SamplingConfig(greedy=True))
    assert "</s>" not in text and text.startswith("주말에")
    calls.clear()
    assert len(generate_ids(lm, prompt, 8, SamplingConfig(greedy=True), stop_at_eos=False)) == 8


def test_kogpt2_style_greedy_loop_runs_in_both_engines(checkpoint):
    """The loop from KoGPT2's README, unchanged but for the loader."""
    from pretrain.api import get_mxnet_model, get_pytorch_model, get_sentencepiece_tokenizer, get_tokenizer

    tok = get_sentencepiece_tokenizer(str(checkpoint[0]))
    assert get_tokenizer(str(checkpoint[0])).endswith(".model")
    outputs = []
    for get, to_input, argmax in (
            (get_pytorch_model, lambda ids: torch.tensor(ids).unsqueeze(0),
             lambda pred: torch.argmax(pred, axis=-1).squeeze().tolist()),
            (get_mxnet_model, lambda ids: mx.nd.array(ids).expand_dims(axis=0),
             lambda pred: mx.nd.argmax(pred, axis=-1).squeeze().astype("int64").asnumpy().tolist())):
        model, vocab = get(str(checkpoint[0]))
        sent = "오늘 나는"
        toked = tok(sent)
        for _ in range(8):
            ids = [vocab[vocab.bos_token]] + vocab[toked]
            input_ids = to_input(ids)
            pred = model(input_ids)[0]
            assert tuple(pred.shape[:2]) == (1, len(ids)) and pred.shape[-1] >= len(vocab)   # (B, T, V)
            gen = vocab.to_tokens(argmax(pred))[-1]
            if gen == "</s>":
                break
            sent += gen.replace("▁", " ")
            toked = tok(sent)
        outputs.append(sent)
    assert outputs[0] == outputs[1]


def test_cli_prints_text(checkpoint, capsys):
    assert generate_main(["--checkpoint", str(checkpoint[1]), "--prompt", "오늘", "--max-length", "5",
                          "--greedy", "--engine", "mxnet"]) == 0
    assert capsys.readouterr().out.startswith("오늘")
    assert generate_main(["--checkpoint", str(checkpoint[1] / "nope"), "--prompt", "x"]) == 2


def test_byte_fallback_pieces_are_generated_unless_banned(checkpoint):
    """Byte pieces are valid text (a character outside the vocabulary): allowed by default and decoded
    together; `ban_bytes` (--ban-byte-tokens) keeps to the learned pieces. Specials are never emitted."""
    from pretrain.generate import non_text_ids

    lm = load_model(checkpoint[0], engine="torch")
    tok = lm.tokenizer
    byte_ids = {i for i in range(tok.vocab_size) if tok.sp.is_byte(i)}
    specials = {tok.unk_id, tok.bos_id, tok.pad_id, tok.mask_id} | {tok.piece_id(p) for p in tok.unused_tokens}
    assert set(non_text_ids(tok).tolist()) == specials and tok.piece_id("\n") not in specials
    assert set(non_text_ids(tok, ban_bytes=True).tolist()) == specials | byte_ids
    assert tok.eos_id not in set(non_text_ids(tok, ban_bytes=True).tolist())
    out = generate_ids(lm, [tok.bos_id], 30, SamplingConfig(temperature=2.0), seed=1, stop_at_eos=False,
                       ban_bytes=True)
    assert not set(out) & set(non_text_ids(tok, ban_bytes=True).tolist())
