"""KoGPT2 users' code runs unchanged, and every client of one checkpoint generates the same greedy tokens.

The checkpoint is a tiny GPT-2 whose weights make its greedy output a known script: blocks that add
nothing (zero output projections), unit-norm zero-mean token embeddings, and position p's embedding a
large multiple of the embedding of the token the script wants after position p. The final LayerNorm
then points at that token, so argmax at position p is `script[p]` whatever the input (tied output
layer), and `</s>` after the script. That makes the expected text exact, and the loops terminate.
"""
import dataclasses
import json

import numpy as np
import pytest

from common.schema import ModelConfig
from pretrain.checkpoint import write_checkpoint
from pretrain.generate import generate_ids, generate_sample, main as generate_main
from pretrain.generate.inference import load_model
from pretrain.generate.sampling import SamplingConfig
from tests.train_fixtures import make_tokenizer, synthetic_docs

torch = pytest.importorskip("torch")
mx = pytest.importorskip("mxnet")
pytest.importorskip("gluonnlp")

PROMPT = "2019년 한해를 보내며,"
# learned pieces, the newline piece, and at the end a character outside the vocabulary (byte pieces)
CONTINUATION = " 오늘 우리는 책을 읽었다.\n주말에 친구가 노래를 불렀다. 😀"

# KoGPT2 v1's README (github.com/SKT-AI/KoGPT2, "How to use"), verbatim.
SEED_PYTORCH = """import torch
from kogpt2.pytorch_kogpt2 import get_pytorch_kogpt2_model
from gluonnlp.data import SentencepieceTokenizer
from kogpt2.utils import get_tokenizer

tok_path = get_tokenizer()
model, vocab = get_pytorch_kogpt2_model()
tok = SentencepieceTokenizer(tok_path,  num_best=0, alpha=0)
sent = '2019년 한해를 보내며,'
toked = tok(sent)
while 1:
  input_ids = torch.tensor([vocab[vocab.bos_token],]  + vocab[toked]).unsqueeze(0)
  pred = model(input_ids)[0]
  gen = vocab.to_tokens(torch.argmax(pred, axis=-1).squeeze().tolist())[-1]
  if gen == '</s>':
      break
  sent += gen.replace('▁', ' ')
  toked = tok(sent)
sent
"""

SEED_MXNET = """import mxnet as mx
from kogpt2.mxnet_kogpt2 import get_mxnet_kogpt2_model
from gluonnlp.data import SentencepieceTokenizer
from kogpt2.utils import get_tokenizer

if mx.context.num_gpus() > 0:
  ctx = mx.gpu()
else:
  ctx = mx.cpu()

tok_path = get_tokenizer()
model, vocab = get_mxnet_kogpt2_model(ctx=ctx)
tok = SentencepieceTokenizer(tok_path, num_best=0, alpha=0)
sent = '2019년 한해를 보내며,'
toked = tok(sent)
while 1:
  input_ids = mx.nd.array([vocab[vocab.bos_token]]  + vocab[toked]).expand_dims(axis=0)
  pred = model(input_ids.as_in_context(ctx))[0]
  gen = vocab.to_tokens(mx.nd.argmax(pred, axis=-1).squeeze().astype('int').asnumpy().tolist())[-1]
  if gen == '</s>':
    break
  sent += gen.replace('▁', ' ')
  toked = tok(sent)
sent
"""

# The only lines a KoGPT2 user changes: where the package comes from, and the model/vocab/tok_path lines.
CHANGES = {
    "from kogpt2.pytorch_kogpt2 import get_pytorch_kogpt2_model": "from pretrain.api import get_pytorch_model",
    "from kogpt2.mxnet_kogpt2 import get_mxnet_kogpt2_model": "from pretrain.api import get_mxnet_model",
    "from kogpt2.utils import get_tokenizer": "from pretrain.api import get_tokenizer",
    "tok_path = get_tokenizer()": "tok_path = get_tokenizer(CHECKPOINT)",
    "model, vocab = get_pytorch_kogpt2_model()": "model, vocab = get_pytorch_model(CHECKPOINT)",
    "model, vocab = get_mxnet_kogpt2_model(ctx=ctx)": "model, vocab = get_mxnet_model(CHECKPOINT, ctx=ctx)",
}


def ported(seed: str) -> str:
    """The seed with CHANGES applied to whole lines; every other character stays as it was."""
    lines = seed.split("\n")
    out = [CHANGES.get(line, line) for line in lines]
    changed = [a for a, b in zip(lines, out) if a != b]
    assert len(changed) == 4 and all(line.startswith(("from kogpt2", "tok_path", "model, vocab")) for line in changed)
    return "\n".join(out)


def run_seed(seed: str, checkpoint: str) -> str:
    ns = {"CHECKPOINT": checkpoint}
    exec(compile(ported(seed), "<kogpt2 README loop>", "exec"), ns)
    return ns["sent"]


CFG = ModelConfig(preset="tiny", max_length=96, dropout=0.0)


def write_scripted(where, tok, script: list) -> str:
    """A checkpoint at `where` whose argmax after position p is script[p] (see the module docstring)."""
    rng = np.random.default_rng(0)
    V, U, H = tok.vocab_size, CFG.units, CFG.hidden_size
    wte = rng.standard_normal((V, U))
    wte -= wte.mean(axis=1, keepdims=True)                        # LayerNorm keeps zero-mean directions
    wte /= np.linalg.norm(wte, axis=1, keepdims=True)
    w = {"wte.weight": wte, "wpe.weight": 50.0 * wte[script], "ln_f.weight": np.ones(U), "ln_f.bias": np.zeros(U)}
    for i in range(CFG.num_layers):
        w.update({f"h.{i}.ln_1.weight": np.ones(U), f"h.{i}.ln_1.bias": np.zeros(U),
                  f"h.{i}.ln_2.weight": np.ones(U), f"h.{i}.ln_2.bias": np.zeros(U),
                  f"h.{i}.attn.qkv.weight": 0.02 * rng.standard_normal((3 * U, U)),
                  f"h.{i}.attn.qkv.bias": np.zeros(3 * U),
                  f"h.{i}.attn.proj.weight": np.zeros((U, U)), f"h.{i}.attn.proj.bias": np.zeros(U),
                  f"h.{i}.mlp.fc.weight": 0.02 * rng.standard_normal((H, U)), f"h.{i}.mlp.fc.bias": np.zeros(H),
                  f"h.{i}.mlp.proj.weight": np.zeros((U, H)), f"h.{i}.mlp.proj.bias": np.zeros(U)})
    w = {k: v.astype(np.float32) for k, v in w.items()}
    state = {"step": 1, "model": dataclasses.asdict(CFG), "tokenizer_sha256": tok.sha256}
    write_checkpoint(str(where / "step_00000001"), w, {}, state, str(tok.model_path.parent), update_latest=True)
    return str(where)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """(checkpoint root, tokenizer, ids of PROMPT + CONTINUATION): greedy decoding writes CONTINUATION."""
    root = tmp_path_factory.mktemp("scripted")
    docs = synthetic_docs(200) + [PROMPT + " 새해에는 더 많은 사람들이"] * 20
    tok = make_tokenizer(root / "tokenizer", docs)
    full = tok.encode(PROMPT + CONTINUATION)
    n = len(tok.encode(PROMPT))
    assert full[:n] == tok.encode(PROMPT) and len(full) + 12 < CFG.max_length
    assert any(tok.sp.is_byte(i) for i in full[n:]) and tok.piece_id("\n") in full[n:]
    script = full + [tok.eos_id] * (CFG.max_length - len(full))   # position p predicts script[p]
    return write_scripted(root / "ckpt", tok, script), tok, full


def test_seed_loops_run_verbatim_in_both_engines(scripted):
    """Both README loops, character for character but for the loader lines: the fixed gluonnlp tokenizer
    line works, the newline piece prints as a newline, and a byte piece is appended as its name (the
    loop's own `gen.replace`), after which the loop re-tokenises that name and the script ends."""
    checkpoint, tok, _ = scripted
    want = PROMPT + CONTINUATION.replace("😀", "<0xF0>")
    assert run_seed(SEED_PYTORCH, checkpoint) == want
    assert run_seed(SEED_MXNET, checkpoint) == want


def test_gluonnlp_fix_is_narrow(scripted):
    """Only num_best 0/1 changes (it raised before); sampling settings still reach sentencepiece."""
    from gluonnlp.data import SentencepieceTokenizer

    from pretrain.api import get_tokenizer

    path = get_tokenizer(scripted[0])
    assert SentencepieceTokenizer(path, num_best=0, alpha=0)(PROMPT) == scripted[1].sp.encode(PROMPT, out_type=str)
    assert SentencepieceTokenizer(path, num_best=1, alpha=0.5)(PROMPT) == scripted[1].sp.encode(PROMPT, out_type=str)
    sampled = SentencepieceTokenizer(path, num_best=-1, alpha=0.5)     # BPE-dropout, as before the fix
    best = scripted[1].sp.encode(CONTINUATION, out_type=str)
    assert any(sampled(CONTINUATION) != best for _ in range(20))


def test_every_client_gives_the_same_greedy_tokens(scripted, tmp_path, capsys):
    """pretrain.generate (torch, mxnet, CLI --json), the seed's loop (its first tokens: after a byte piece
    it re-tokenises the piece's name) and transformers' pipeline on the HF export agree, and the texts
    of generate and the pipeline decode the byte pieces into the character."""
    transformers = pytest.importorskip("transformers")
    from pretrain.export import export_hf

    checkpoint, tok, full = scripted
    n = len(tok.encode(PROMPT))
    want = full[n:] + [tok.eos_id]
    greedy = SamplingConfig(greedy=True)
    for engine in ("torch", "mxnet"):
        lm = load_model(checkpoint, engine=engine)
        assert generate_ids(lm, [tok.bos_id] + full[:n], 64, greedy) == want
        assert generate_sample(lm, PROMPT, 64, greedy)["text"] == PROMPT + CONTINUATION
    argv = ["--checkpoint", checkpoint, "--prompt", PROMPT, "--greedy", "--json", "--num-samples", "2"]
    assert generate_main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"text": PROMPT + CONTINUATION, "ids": want, "prompt_ids": [tok.bos_id] + full[:n]}] * 2

    # the seed's loop, recording its tokens: identical up to the first byte piece
    model, vocab = __import__("pretrain.api", fromlist=["x"]).get_pytorch_model(checkpoint)
    seen = []
    sent = PROMPT
    while True:
        toked = tok.sp.encode(sent, out_type=str)
        pred = model(torch.tensor([vocab[vocab.bos_token]] + vocab[toked]).unsqueeze(0))[0]
        gen = vocab.to_tokens(torch.argmax(pred, axis=-1).squeeze().tolist())[-1]
        if gen == "</s>":
            break
        seen.append(vocab[gen])
        sent += gen.replace("▁", " ")
    first_byte = next(k for k, i in enumerate(want) if tok.sp.is_byte(i))
    assert seen[:first_byte + 1] == want[:first_byte + 1]

    out = tmp_path / "hf"
    export_hf(checkpoint, str(out))
    pipe = transformers.pipeline("text-generation", model=str(out), tokenizer=str(out), device="cpu")
    (res,) = pipe(PROMPT, return_tensors=True)
    assert res["generated_token_ids"] == [tok.bos_id] + full + [tok.eos_id]
    (res,) = pipe(PROMPT)
    assert res["generated_text"] == PROMPT + CONTINUATION


def test_banned_ids_are_banned_alike(scripted, tmp_path):
    """A model whose favourite next tokens are <pad>, <mask>, <unused0> and <s>: generate's ban and the
    export's suppress_tokens pick the same runner-up ids."""
    transformers = pytest.importorskip("transformers")
    from pretrain.export import export_hf

    _, tok, full = scripted
    n = len(tok.encode(PROMPT))
    odd = [tok.pad_id, tok.mask_id, tok.piece_id("<unused0>"), tok.bos_id]
    script = full[:n] + odd + [tok.eos_id] * (CFG.max_length - n - len(odd))
    checkpoint = write_scripted(tmp_path / "ckpt", tok, script)
    ids = generate_ids(load_model(checkpoint), [tok.bos_id] + full[:n], 8, SamplingConfig(greedy=True))
    assert len(ids) == len(odd) + 1 and ids[-1] == tok.eos_id and not set(ids) & set(odd)
    export_hf(checkpoint, str(tmp_path / "hf"))
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    (res,) = pipe(PROMPT, return_tensors=True)
    assert res["generated_token_ids"] == [tok.bos_id] + full[:n] + ids


def test_hf_tokenizer_matches_sentencepiece_around_symbols(scripted, tmp_path):
    """User-defined symbols (<mask>, <unused*>, newline) inside text: the same ids and decodes as
    SentencePiece; control tokens written in text are text in both; `tok(text)` prepends <s>. The one
    documented difference: a text that is exactly one symbol has no leading ▁ piece in HF."""
    transformers = pytest.importorskip("transformers")
    from pretrain.export import export_hf

    checkpoint, tok, _ = scripted
    out = tmp_path / "hf"
    export_hf(checkpoint, str(out))
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in ["<mask> 토큰 <unused0>끝", "문장 하나</s>문장 둘</s>", "<s>오늘 나는",
                 "\n오늘\n\n나는 <mask>", "끝<unused1><unused1>", " 앞 공백", "", PROMPT + CONTINUATION]:
        ids = tok.encode(text)
        assert hf(text, add_special_tokens=False).input_ids == ids, text
        assert hf(text).input_ids == [tok.bos_id] + ids, text
        assert hf.decode(ids) == tok.decode(ids) == text, text
        assert hf.decode([tok.bos_id] + ids + [tok.eos_id], skip_special_tokens=True) == text
    assert tok.eos_id not in tok.encode("문장 하나</s>")                       # text, not a control id
    for sym in ["\n", "<mask>", "<unused0>"]:
        assert tok.encode(sym) == [tok.piece_id("▁"), tok.piece_id(sym)]
        assert hf(sym, add_special_tokens=False).input_ids == [tok.piece_id(sym)]
        assert hf.decode(hf(sym).input_ids, skip_special_tokens=True) == sym


def test_hf_tokenizer_equals_sentencepiece_on_real_text(scripted, tmp_path):
    """Every 20th line of ../shared/data/ko_dev_corpus.txt (13.7k lines), one by one and joined into
    multi-line documents: the exported tokenizer's ids and decodes equal SentencePiece's."""
    transformers = pytest.importorskip("transformers")
    from pathlib import Path

    from pretrain.export import export_hf

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_dev_corpus.txt"
    if not src.is_file():
        pytest.skip(f"{src} not here (development data, outside the repository)")
    lines = src.read_text(encoding="utf-8").splitlines()[::20]
    texts = lines + ["\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    checkpoint, tok, _ = scripted
    export_hf(checkpoint, str(tmp_path / "hf"))
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = tok.encode_batch(texts)
    assert hf(texts, add_special_tokens=False).input_ids == ours
    assert hf.batch_decode(ours) == [tok.decode(ids) for ids in ours]
