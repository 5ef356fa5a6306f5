"""SentencePiece tokenizer: special ids, round trips, reproducibility, KoGPT2-style files, gluonnlp."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import zstandard as zstd

from common.config import load_config
from common.io import read_json, sha256_file
from corpus.sentence_sample import Reservoir
from corpus.tokenizer import (Tokenizer, TokenizerError, canonical_model, tokenizer_report,
                              train_spm_file)

# Sentences written for these tests (no external data).
SENTENCES = [
    "오늘 아침에는 비가 조금 내렸지만 오후에는 하늘이 맑게 개었다.",
    "서울 지하철 2호선은 하루에 약 200만 명이 이용한다.",
    "우리 동네 도서관은 매주 월요일에 문을 닫습니다.",
    "그는 커피를 마시면서 신문의 경제면을 천천히 읽었다.",
    "이번 학기에는 한국어 문법과 자연어 처리 수업을 듣는다.",
    "할머니께서 만들어 주신 김치찌개가 세상에서 제일 맛있어요.",
    "회의는 오후 3시 30분에 본관 4층 회의실에서 열립니다.",
    "새로 나온 스마트폰은 배터리가 오래가고 카메라 성능이 좋다.",
    "주말마다 한강 공원에서 자전거를 타는 사람들이 많다.",
    "정부는 내년 예산안을 국회에 제출했다고 밝혔다.",
    "이 영화는 배우들의 연기가 훌륭하고 음악도 아름답다.",
    "봄이 되면 벚꽃이 피어서 거리가 온통 분홍빛으로 물든다.",
    "아이들은 운동장에서 축구를 하며 즐겁게 뛰어놀았다.",
    "택배는 내일 오전 중으로 도착할 예정이라고 문자가 왔다.",
    "제주도 여행에서 가장 기억에 남는 곳은 성산 일출봉이었다.",
    "연구팀은 새로운 인공지능 모델의 성능을 여러 언어로 평가했다.",
    "시험 기간이라 도서관 열람실에 빈자리가 하나도 없었다.",
    "겨울에는 따뜻한 군고구마와 호빵이 생각난다.",
    "그 가게는 저녁 9시까지 영업하고 일요일에는 쉰다.",
    "대학교 동아리에서 만난 친구들과 아직도 연락하며 지낸다.",
    "엄마가 보내 준 반찬 덕분에 이번 주는 장을 보지 않아도 된다.",
    "경기 결과는 2대 1로 우리 팀이 역전승을 거두었다.",
    "기차표를 미리 예매하지 않아서 입석으로 부산까지 갔다.",
    "박물관에는 조선 시대의 도자기와 그림이 전시되어 있다.",
    "오랜만에 대청소를 했더니 방이 훨씬 넓어 보인다.",
    "환율이 오르면서 수입 물가도 함께 상승하고 있다.",
    "강아지가 산책을 나가자고 현관 앞에서 꼬리를 흔들었다.",
    "선생님은 학생들에게 매일 일기를 쓰라고 말씀하셨다.",
    "이 노래는 가사가 따뜻해서 들을 때마다 위로가 된다.",
    "새벽 배송으로 주문한 우유와 빵이 문 앞에 놓여 있었다.",
    "ㅋㅋㅋ 진짜 웃기다 ㅠㅠ 완전 대박이야!!",
    "GPT-2 모델은 2019년에 OpenAI가 공개했고, KoGPT2는 SKT가 만들었다.",
    "가격은 12,500원이고 할인하면 9,900원입니다.",
    "Python 3.11과 numpy로 데이터를 처리했다.",
    "날씨가 너무 좋아서 기분이 좋아요 😀",
]


def make_docs(n_docs: int = 240, seed: int = 0) -> list[dict]:
    """Deterministic documents: 2-4 paragraphs of 1-3 sentences, paragraphs joined with '\\n'."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        paras = [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 3)))
                 for _ in range(rng.randint(2, 4))]
        docs.append({"text": "\n".join(paras), "source": "test", "id": f"test-{i:05d}"})
    return docs


def write_clean_dir(root: Path, docs: list[dict], parts: int = 2, extra_lines: dict | None = None) -> Path:
    """A clean-corpus directory in the CONTRACTS.md format; `extra_lines[part]` are raw lines appended."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(parts):
        lines = [json.dumps(d, ensure_ascii=False).encode("utf-8") for d in docs[k::parts]]
        lines += (extra_lines or {}).get(k, [])
        name = f"part-{k:05d}.jsonl.zst"
        (root / name).write_bytes(zstd.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
        entries.append({"file": name, "docs": len(lines), "bytes": sum(map(len, lines)),
                        "sha256": sha256_file(root / name)})
    (root / "manifest.json").write_text(json.dumps({"format": "kogpt-clean-v1", "parts": entries}))
    return root


def small_config(tmp: Path, **tok) -> object:
    sets = [f"corpus.out_dir={tmp / 'clean'}", f"tokenizer.dir={tmp / 'tok'}", "tokenizer.vocab_size=700",
            "tokenizer.num_unused=8", "tokenizer.threads=1", "corpus.sentence_splitter=regex",
            f"shards.out_dir={tmp / 'shards'}", "shards.valid_fraction=0.1", "shards.workers=1"]
    sets += [f"tokenizer.{k}={v}" for k, v in tok.items()]
    return load_config(None, sets)


def train_small(tmp: Path, threads: int = 1, vocab: int = 700) -> Tokenizer:
    """Train directly on the fixture sentences (no corpus stage involved)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = small_config(tmp, vocab_size=vocab)
    sent = tmp / "sentences.txt"
    sent.write_text("\n".join(s for d in make_docs() for s in d["text"].split("\n")) + "\n", encoding="utf-8")
    train_spm_file(sent, cfg.tokenizer, tmp / "tok", threads)
    tok = Tokenizer(tmp / "tok" / "spm.model")
    tok.save(tmp / "tok")
    return tok


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return train_small(tmp_path_factory.mktemp("tok"))


def test_special_token_ids_fixed(tok):
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert [tok.sp.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "<pad>", "<mask>"]
    assert tok.unused_tokens == [f"<unused{i}>" for i in range(8)]
    assert [tok.piece_id(f"<unused{i}>") for i in range(8)] == list(range(5, 13))
    assert tok.vocab_size == 700
    meta = read_json(tok.model_path.parent / "tokenizer.json")
    assert meta["special_ids"] == {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "<mask>": 4}
    assert meta["model_sha256"] == sha256_file(tok.model_path) == tok.sha256
    assert meta["special_tokens"]["bos"] == "<s>" and meta["format"] == "kogpt-tokenizer-v1"


@pytest.mark.parametrize("text", [
    "오늘 아침에는 비가 조금 내렸지만 오후에는 하늘이 맑게 개었다.",
    "처음 보는 글자: 똠방각하 뷁 휏 (희귀 음절)",
    "GPT-2와 KoGPT2, 2019년 12월 31일 23:59, 가격 1,234,567원, e-mail: a.b@c.kr",
    "이모지 😀👍🏽🇰🇷 와 한자 漢字 그리고 ㅋㅋㅋ ㅠㅠ",
    "  앞뒤 공백과   여러 칸 공백  ",
    "문단 하나\n문단 둘\n\n탭\t구분",
    "<mask> 와 <unused3> 는 그대로",
])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids  # byte fallback: nothing becomes <unk>


def test_user_defined_symbols_are_single_ids(tok):
    assert tok.encode("<mask>")[-1] == 4
    assert 5 + 3 in tok.encode("<unused3>")


def test_newline_is_its_own_piece_not_a_byte(tok):
    """Paragraphs in clean documents are separated by \n: one piece (id 5 + num_unused), never <0x0A>."""
    nl = tok.piece_id("\n")
    assert nl == 5 + 8 and not (tok.sp.is_control(nl) or tok.sp.is_byte(nl) or tok.sp.is_unknown(nl))
    ids = tok.encode("문단 하나\n문단 둘\n\n끝")
    assert ids.count(nl) == 3 and tok.piece_id("<0x0A>") not in ids
    assert tok.decode(ids) == "문단 하나\n문단 둘\n\n끝"
    assert not tok.sp.id_to_piece(ids[ids.index(nl) + 1]).startswith("▁")   # no space there, no ▁


def test_pii_placeholders_are_single_pieces(tok):
    """The corpus stage's <|rrn|>, <|tel|>, ... (corpus/pii.py) each encode to one id, after the newline's."""
    from corpus.pii import PLACEHOLDERS

    ids = [tok.piece_id(p) for p in PLACEHOLDERS.values()]
    assert ids == list(range(5 + 8 + 1, 5 + 8 + 1 + len(ids)))
    text = "연락처 <|tel|>, 메일 <|email|>로"
    enc = tok.encode(text)
    assert tok.piece_id("<|tel|>") in enc and tok.piece_id("<|email|>") in enc and tok.decode(enc) == text


def test_reproducible_byte_identical_across_threads(tmp_path, tok):
    a = train_small(tmp_path / "a", threads=1)
    b = train_small(tmp_path / "b", threads=2)
    assert a.model_path.read_bytes() == b.model_path.read_bytes() == tok.model_path.read_bytes()
    assert (tmp_path / "a/tok/spm.vocab").read_bytes() == (tmp_path / "b/tok/spm.vocab").read_bytes()
    assert canonical_model(a.model_path.read_bytes()) == a.model_path.read_bytes()  # already canonical


def test_vocab_too_large_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match=r"tokenizer.vocab_size=20000 cannot be reached.*at most \d+"):
        train_small(tmp_path, vocab=20000)
    with pytest.raises(TokenizerError, match="reserved"):
        train_small(tmp_path, vocab=200)


def test_load_dir_json_and_bare_spiece(tmp_path, tok):
    d = tok.model_path.parent
    spiece = tmp_path / "kogpt2_like.spiece"
    shutil.copy(tok.model_path, spiece)
    for t in (Tokenizer.load(d), Tokenizer.load(d / "tokenizer.json"), Tokenizer.load(spiece)):
        assert t.sha256 == tok.sha256 and t.special_ids == tok.special_ids
        assert t.encode("한국어 문장입니다") == tok.encode("한국어 문장입니다")
    saved = Tokenizer.load(spiece).save(tmp_path / "copy")
    assert read_json(saved)["model_sha256"] == tok.sha256
    assert Tokenizer.load(tmp_path / "copy").sha256 == tok.sha256


def test_mismatched_json_is_refused(tmp_path, tok):
    d = tmp_path / "t"
    shutil.copytree(tok.model_path.parent, d)
    meta = read_json(d / "tokenizer.json")
    meta["model_sha256"] = "0" * 64
    (d / "tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="mixed up"):
        Tokenizer.load(d)
    with pytest.raises(TokenizerError, match="make tokenizer"):
        Tokenizer.load(tmp_path / "nothing_here")


def test_bare_model_with_other_special_layout(tmp_path):
    """A KoGPT2-v1-like file: special ids are whatever the model says (read via piece_to_id), no <mask>."""
    sent = tmp_path / "s.txt"
    sent.write_text("\n".join(SENTENCES * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(sent), model_prefix=str(tmp_path / "v1"), model_type="bpe",
                                   vocab_size=700, byte_fallback=True, unk_id=0, pad_id=1, bos_id=-1, eos_id=-1,
                                   user_defined_symbols=["<s>", "</s>"], minloglevel=2)
    (tmp_path / "v1.model").rename(tmp_path / "v1.spiece")
    t = Tokenizer.load(tmp_path / "v1.spiece")
    assert (t.unk_id, t.pad_id, t.bos_id, t.eos_id, t.mask_id) == (0, 1, 2, 3, None)


def test_gluonnlp_vocab_and_tokenizer(tok):
    pytest.importorskip("gluonnlp")
    import gluonnlp as nlp

    vocab = tok.gluonnlp_vocab()
    assert vocab[vocab.bos_token] == 1 and vocab[vocab.eos_token] == 2
    assert vocab[vocab.unknown_token] == 0 and vocab[vocab.padding_token] == 3 and vocab[vocab.mask_token] == 4
    assert len(vocab) == tok.vocab_size
    text = "2019년 한해를 보내며, 새로 나온 스마트폰은 배터리가 오래간다"
    gtok = nlp.data.SentencepieceTokenizer(str(tok.model_path), num_best=0, alpha=0)  # loads in gluonnlp
    assert gtok.tokens == [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]
    toked = tok.gluonnlp_tokenizer()(text)  # gluonnlp's class; see its docstring for the sampling fix
    assert isinstance(tok.gluonnlp_tokenizer(), nlp.data.SentencepieceTokenizer)
    assert toked == tok.sp.encode(text, out_type=str)
    ids = vocab[toked]
    assert ids == tok.encode(text)
    assert vocab.to_tokens(ids) == toked
    # KoGPT2's own call on a bare file
    kv = nlp.vocab.BERTVocab.from_sentencepiece(str(tok.model_path), mask_token=None, sep_token=None,
                                                cls_token=None, unknown_token="<unk>", padding_token="<pad>",
                                                bos_token="<s>", eos_token="</s>")
    assert kv[kv.bos_token] == 1 and kv[toked] == ids


def test_report(tok):
    r = tokenizer_report(tok, [d["text"] for d in make_docs(20, seed=7)] + ["희귀 글자 뷁 😀"])
    assert r["vocab_size"] == 700 and r["docs"] == 21 and r["unk_rate"] == 0.0
    assert 0 < r["byte_fallback_rate"] < 0.1
    assert 0 < r["tokens_per_char"] < 1 < r["tokens_per_word"]


def test_reservoir_is_seeded_uniform_and_bounded():
    r = Reservoir(5, seed=1)
    for i in range(3):
        r.add(i)
    assert r.items == [0, 1, 2]
    a, b = Reservoir(100, seed=3), Reservoir(100, seed=3)
    for i in range(10_000):
        a.add(i)
        b.add(i)
    assert a.items == b.items and len(a.items) == 100 and len(set(a.items)) == 100 and a.seen == 10_000
    counts = [0] * 100
    for seed in range(2000):
        r = Reservoir(10, seed)
        for i in range(100):
            r.add(i)
        for x in r.items:
            counts[x] += 1
    assert min(counts) > 130 and max(counts) < 280  # expected 200 each (binomial sd ~13)
    assert sum(counts[:50]) / sum(counts) == pytest.approx(0.5, abs=0.03)


def test_train_tokenizer_end_to_end(tmp_path):
    pytest.importorskip("corpus.docs")
    pytest.importorskip("corpus.split")
    from corpus.tokenizer import main

    write_clean_dir(tmp_path / "clean", make_docs())
    cfg = small_config(tmp_path)
    (tmp_path / "c.yaml").write_text("name: t\n")
    argv = ["--config", str(tmp_path / "c.yaml")]
    for k in ("corpus.out_dir", "tokenizer.dir", "shards.valid_fraction"):
        sec, key = k.split(".")
        argv += ["--set", f"{k}={getattr(getattr(cfg, sec), key)}"]
    argv += ["--set", "tokenizer.vocab_size=700", "--set", "tokenizer.num_unused=8",
             "--set", "corpus.sentence_splitter=regex"]
    assert main(argv) == 0
    d = tmp_path / "tok"
    meta, report = read_json(d / "tokenizer.json"), read_json(d / "report.json")
    assert meta["training"]["stats"]["heldout_docs"] > 0 and report["docs"] > 0 and report["unk_rate"] == 0
    assert meta["training"]["stats"]["sentences_sampled"] <= meta["training"]["stats"]["sentences_seen"]
    first = (d / "spm.model").read_bytes()
    mtime = (d / "spm.model").stat().st_mtime_ns
    assert main(argv) == 0 and (d / "spm.model").stat().st_mtime_ns == mtime  # up to date: skipped
    assert main(argv + ["--force", "--set", "tokenizer.threads=2"]) == 0
    assert (d / "spm.model").read_bytes() == first  # same corpus + config -> same bytes
    t = Tokenizer.load(d)
    assert t.decode(t.encode(SENTENCES[0])) == SENTENCES[0]
