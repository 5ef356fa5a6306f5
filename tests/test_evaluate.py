"""Downstream evaluation: task readers, the classifier head, a short fine-tune through the CLI, perplexity.

Everything runs on tiny fixtures written here: a SentencePiece model trained on a few Korean lines,
and a random-init 2-layer GPT-2 saved with `write_checkpoint`.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sentencepiece as spm
import torch

from corpus.tokenizer import Tokenizer
from pretrain.checkpoint import write_checkpoint
from pretrain.engines.torch.model import GPT2, GPT2Shape
from pretrain.eval.config import EvalConfig
from pretrain.eval.evaluate import main, render_markdown, run
from pretrain.eval.finetune import SequenceClassifier, batch_order, encode_examples, pad_batch, perplexity
from pretrain.eval.tasks import DataError, Example, load_task, read_task_file

POS = ["정말 재밌는 영화였어요", "배우 연기가 최고예요", "감동적인 이야기, 또 보고 싶다", "음악이 좋아서 행복했다",
       "가족과 함께 보기 좋은 영화", "올해 최고의 작품입니다"]
NEG = ["너무 지루하고 재미없다", "시간 아까운 영화", "연기가 어색해서 별로", "스토리가 엉망이다",
       "돈 주고 보기 아깝다", "다시는 안 본다"]


def _write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    lines = POS + NEG + ["질문이 있어요", "같은 뜻의 문장", "다른 뜻의 문장입니다", "오늘 날씨가 좋다"]
    corpus = _write(d / "corpus.txt", "\n".join(lines * 3) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=str(d / "spm"), vocab_size=120, model_type="bpe", character_coverage=1.0,
        byte_fallback=False, unk_id=0, bos_id=1, eos_id=2, pad_id=3, user_defined_symbols=["<mask>"],
        minloglevel=2, num_threads=1)
    return str(d)


@pytest.fixture(scope="module")
def ckpt(tok_dir, tmp_path_factory):
    """A step directory holding a random-init 2-layer GPT-2 (units 32, context 32)."""
    tok = Tokenizer.load(tok_dir)
    torch.manual_seed(0)
    shape = GPT2Shape(vocab_size=tok.vocab_size, num_layers=2, units=32, num_heads=2, max_length=32, dropout=0.0)
    model = GPT2(shape)
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("ckpt")
    state = {"step": 7, "tokens_seen": 0, "engine": "torch",
             "model": {"num_layers": 2, "units": 32, "num_heads": 2, "max_length": 32, "layer_norm_eps": 1e-5}}
    return write_checkpoint(str(root / "step_00000007"), weights, {}, state, tok_dir)


def _nsmc_dir(tmp_path, n_train=20, n_test=8):
    d = tmp_path / "nsmc"
    d.mkdir()

    def rows(n):
        out = []
        for i in range(n):
            text, label = (POS[i % len(POS)], 1) if i % 2 == 0 else (NEG[i % len(NEG)], 0)
            out.append(f"{1000 + i}\t{text}\t{label}")
        return "id\tdocument\tlabel\n" + "\n".join(out) + "\n"
    _write(d / "ratings_train.txt", rows(n_train))
    _write(d / "ratings_test.txt", rows(n_test))
    return str(d)


# ----------------------------------------------------------------------------------------------------
# readers


def test_nsmc_reader_keeps_quotes_and_skips_empty(tmp_path):
    p = _write(tmp_path / "r.txt", 'id\tdocument\tlabel\n1\t"명대사" 최고\t1\n2\t\t0\n3\t별로\t0\n')
    ex = read_task_file(p, "nsmc")
    assert ex == [Example('"명대사" 최고', None, 1), Example("별로", None, 0)]


def test_nsmc_reader_errors_name_file_and_line(tmp_path):
    p = _write(tmp_path / "bad.txt", "id\tdocument\tlabel\n1\t좋다\t1\n2\t싫다\t0\textra\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: expected 3 tab-separated fields"):
        read_task_file(p, "nsmc")
    p = _write(tmp_path / "lab.txt", "id\tdocument\tlabel\n1\t좋다\t5\n")
    with pytest.raises(DataError, match=r"lab\.txt:2: label column 'label' is '5'"):
        read_task_file(p, "nsmc")


def test_paraphrase_reader_csv_quoting_header_order_and_headerless(tmp_path):
    # a quoted field holding a tab and doubled quotes, as in the question-pair train file
    p = _write(tmp_path / "q.txt", 'question1\tquestion2\tis_duplicate\n가\t"나 ""다""\t"\t1\n라\t마\t0\n')
    assert read_task_file(p, "paraphrase") == [Example("가", '나 "다"', 1), Example("라", "마", 0)]
    p = _write(tmp_path / "o.txt", "is_duplicate\tquestion2\tquestion1\n0\tB\tA\n")
    assert read_task_file(p, "paraphrase") == [Example("A", "B", 0)]
    p = _write(tmp_path / "n.txt", "A\tB\t1\n")
    assert read_task_file(p, "paraphrase") == [Example("A", "B", 1)]


def test_load_task_holds_out_nsmc_validation(tmp_path):
    d = _nsmc_dir(tmp_path, n_train=20)
    a = load_task("nsmc", d, valid_fraction=0.25, seed=3)
    b = load_task("nsmc", d, valid_fraction=0.25, seed=3)
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (15, 5, 8)
    assert a == b                                            # seeded: the same split every time
    with pytest.raises(DataError, match="no such file"):
        load_task("paraphrase", d)


# ----------------------------------------------------------------------------------------------------
# inputs and head


def test_encode_layout_and_truncation(tok_dir):
    tok = Tokenizer.load(tok_dir)
    single = encode_examples(tok, [Example("정말 재밌는 영화였어요", None, 1)], max_length=64)[0]
    assert single == [tok.bos_id] + tok.encode("정말 재밌는 영화였어요") + [tok.eos_id]
    long_a, short_b = " ".join(POS), "별로"
    pair = encode_examples(tok, [Example(long_a, short_b, 0)], max_length=12)[0]
    b_ids = tok.encode(short_b)
    assert len(pair) == 12 and pair[0] == tok.bos_id and pair[-1] == tok.eos_id
    assert pair[-1 - len(b_ids): -1] == b_ids                 # the short sentence survives whole
    assert pair[1: 12 - 2 - len(b_ids)] == tok.encode(long_a)[: 12 - 3 - len(b_ids)]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_head_shapes_and_padding_invariance(pooling):
    torch.manual_seed(0)
    gpt = GPT2(GPT2Shape(vocab_size=50, num_layers=1, units=16, num_heads=2, max_length=16, dropout=0.0))
    model = SequenceClassifier(gpt, 16, num_labels=2, pooling=pooling).eval()
    seqs = [[5, 6, 7, 2], [8, 2], [9, 10, 11, 12, 13, 2]]
    ids, lengths = pad_batch(seqs, pad_id=3)
    assert ids.shape == (3, 6) and lengths.tolist() == [4, 2, 6]
    logits = model(ids, lengths)
    assert logits.shape == (3, 2) and logits.dtype == torch.float32
    for i, s in enumerate(seqs):                             # padding after a sequence changes nothing
        alone = model(torch.tensor([s]), torch.tensor([len(s)]))
        torch.testing.assert_close(alone[0], logits[i], rtol=1e-5, atol=1e-6)


def test_batch_order_covers_every_example_once():
    import random
    lengths = [5, 1, 9, 3, 3, 7, 2]
    for rng in (None, random.Random(0)):
        batches = batch_order(lengths, 3, rng)
        assert sorted(i for b in batches for i in b) == list(range(7))
    assert [lengths[i] for b in batch_order(lengths, 3, None) for i in b] == sorted(lengths)


# ----------------------------------------------------------------------------------------------------
# fine-tuning through the CLI


def test_two_step_finetune_writes_results(ckpt, tmp_path):
    data = _nsmc_dir(tmp_path, n_train=10)
    out = tmp_path / "eval"
    rc = main(["--checkpoint", ckpt, "--task", "nsmc", "--data", data, "--out", str(out), "--epochs", "1",
               "--batch-size", "4", "--valid-fraction", "0.2", "--lr", "1e-3", "--name", "tiny", "--device", "cpu"])
    assert rc == 0
    table = json.loads((out / "results.json").read_text("utf-8"))
    (row,) = table["rows"]
    assert (row["task"], row["name"], row["init"], row["steps"]) == ("nsmc", "tiny", "pretrained", 2)
    assert row["train_examples"] == 8 and row["test_examples"] == 8 and 0.0 <= row["test_accuracy"] <= 1.0
    assert row["step"] == 7 and row["pooling"] == "last"
    md = (out / "results.md").read_text("utf-8")
    assert "| tiny | 7 |" in md and "KoGPT2 (SKT) | 0.899 | 0.943" in md
    detail = json.loads((out / "nsmc-tiny-pretrained.json").read_text("utf-8"))
    assert detail["config"]["batch_size"] == 4 and len(detail["history"]) == 1
    # a second run with another init adds a row; the same key replaces its row
    main(["--checkpoint", ckpt, "--task", "nsmc", "--data", data, "--out", str(out), "--epochs", "1",
          "--batch-size", "8", "--valid-fraction", "0.2", "--name", "tiny", "--init", "scratch"])
    main(["--checkpoint", ckpt, "--task", "nsmc", "--data", data, "--out", str(out), "--epochs", "1",
          "--batch-size", "8", "--valid-fraction", "0.2", "--name", "tiny", "--init", "scratch"])
    rows = json.loads((out / "results.json").read_text("utf-8"))["rows"]
    assert sorted(r["init"] for r in rows) == ["pretrained", "scratch"]


def test_two_step_paraphrase_finetune_uses_the_pair_layout(ckpt, tmp_path):
    """A question-pair fine-tune through the CLI: two steps on the pairs, with the task's own validation file."""
    d = tmp_path / "qpair"
    d.mkdir()
    pairs = [(POS[i % len(POS)], POS[(i + 1) % len(POS)], 1) if i % 2 == 0 else (POS[i % len(POS)], NEG[i % len(NEG)], 0)
             for i in range(12)]
    body = "question1\tquestion2\tis_duplicate\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pairs)
    for name in ("train.txt", "validation.txt", "test.txt"):
        _write(d / name, body)
    out = tmp_path / "eval"
    rc = main(["--checkpoint", ckpt, "--task", "paraphrase", "--data", str(d), "--out", str(out), "--epochs", "1",
               "--batch-size", "6", "--lr", "1e-3", "--name", "tiny", "--device", "cpu"])
    assert rc == 0
    (row,) = json.loads((out / "results.json").read_text("utf-8"))["rows"]
    assert (row["task"], row["steps"], row["train_examples"], row["test_examples"]) == ("paraphrase", 2, 12, 12)
    assert 0.0 <= row["test_accuracy"] <= 1.0


def test_finetune_learns_a_separable_task(ckpt, tmp_path):
    """Positive reviews share no words with negative ones: the tiny model must reach full accuracy."""
    data = _nsmc_dir(tmp_path, n_train=40, n_test=12)
    row = run(EvalConfig(task="nsmc", checkpoint=ckpt, data=data, out=str(tmp_path / "e"), epochs=15,
                         batch_size=8, lr=3e-3, warmup=0.0, valid_fraction=0.1, dropout=0.0, device="cpu"))
    assert row["test_accuracy"] == 1.0, row


def test_cli_argument_errors(ckpt):
    with pytest.raises(SystemExit, match="needs --data"):
        main(["--checkpoint", ckpt, "--task", "nsmc"])
    with pytest.raises(SystemExit, match="needs --text"):
        main(["--checkpoint", ckpt, "--task", "perplexity"])


# ----------------------------------------------------------------------------------------------------
# perplexity


def test_perplexity_single_window_matches_direct_loss(ckpt, tok_dir, tmp_path):
    tok = Tokenizer.load(tok_dir)
    torch.manual_seed(0)
    gpt = GPT2(GPT2Shape(vocab_size=tok.vocab_size, num_layers=2, units=32, num_heads=2, max_length=64,
                         dropout=0.0)).eval()
    docs = ["오늘 날씨가 좋다", "정말 재밌는 영화였어요"]
    bos, eos = tok.bos_id, tok.eos_id
    stream = [bos] + tok.encode(docs[0]) + [eos, bos] + tok.encode(docs[1]) + [eos]   # as in the shards
    assert len(stream) <= 64
    res = perplexity(gpt, tok, docs, context=64, stride=32, device=torch.device("cpu"), amp=False)
    ids = torch.tensor([stream])
    targets = ids[:, 1:].clone()
    targets[targets == bos] = -100                                # the <s> after </s> is not scored
    with torch.no_grad():
        direct = gpt.loss(ids[:, :-1], targets).item()
    assert res["tokens"] == len(stream) - 2 and res["windows"] == 1
    assert res["nll"] == pytest.approx(direct, rel=1e-5)
    assert res["bits_per_char"] == pytest.approx(direct * res["tokens"] / math.log(2) / sum(map(len, docs)))


def test_perplexity_sliding_window_scores_each_token_once(ckpt, tok_dir, tmp_path):
    text = _write(tmp_path / "held.txt", "\n".join(POS + ["", "  "] + NEG) + "\n")
    out = tmp_path / "ppl"
    rc = main(["--checkpoint", ckpt, "--task", "perplexity", "--text", text, "--out", str(out), "--stride", "8"])
    assert rc == 0
    (row,) = json.loads((out / "results.json").read_text("utf-8"))["rows"]
    tok = Tokenizer.load(tok_dir)
    n_tokens = sum(len(tok.encode(t)) + 1 for t in POS + NEG)   # every document + its </s> (not its <s>)
    assert row["tokens"] == n_tokens and row["docs"] == len(POS + NEG)
    n_targets = n_tokens + len(POS + NEG) - 1                     # the stream's targets, the <s>s included
    assert row["windows"] == math.ceil((n_targets - 32) / 8) + 1    # context 32, stride 8
    # an untrained model (N(0, 0.02) weights) predicts nearly uniformly: perplexity ~ vocab size
    assert abs(row["perplexity"] - tok.vocab_size) / tok.vocab_size < 0.1
    assert "| perplexity |" in render_markdown([row])
    assert np.isfinite(row["bits_per_char"])
