"""Token shards: write/read round trip, determinism, merge, bad documents, tokenizer mixing refused, inspect."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.io import read_json, sha256_file
from corpus.shards import (ShardsError, TokenShards, build_shards, check_tokenizer, inspect, is_valid_doc, main,
                           merge_shard_dirs)
from test_tokenizer import SENTENCES, make_docs, small_config, train_small, write_clean_dir

BAD_LINES = {0: [b'{"text": "broken json', b'{"source": "x", "id": "no-text"}', b"\xff\xfe not utf-8",
                 b'{"text": "", "id": "empty"}', b"[1, 2, 3]"]}


# spacing, specials inside words, bytes: the word-cache encoder must equal plain SentencePiece on these
TRICKY = ["  앞 공백과   여러 칸  \n<mask>안에<unused2>끼움 😀👍🏽 漢字 뷁 ", "탭\t있고 ㅋㅋㅋ  끝 공백 ", " ",
          "GPT-2는 2019년,  가격 12,500원!! e-mail: a.b@c.kr\n\n\n끝"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    tok = train_small(root)
    docs = make_docs(120, seed=5)
    for i, text in zip((3, 6, 9, 12), TRICKY):
        docs[i]["text"] = text
    write_clean_dir(root / "clean", docs, parts=3, extra_lines=BAD_LINES)
    return root, tok, docs


def build(root: Path, out: str, workers: int = 1, **shards) -> dict:
    cfg = small_config(root)
    cfg.shards.out_dir = str(root / out)
    for k, v in shards.items():
        setattr(cfg.shards, k, v)
    return build_shards(cfg, workers=workers)


def all_docs(d: Path) -> dict[str, list[np.ndarray]]:
    return {s: [TokenShards(d, s).document(i) for i in range(TokenShards(d, s).num_docs)] for s in ("train", "valid")}


def test_write_read_round_trip(env):
    root, tok, docs = env
    m = build(root, "s1")
    d = root / "s1"
    assert m["format"] == "kogpt-shards-v2" and m["dtype"] == "uint16" and m["tokenizer_sha256"] == tok.sha256
    assert m["bos_id"] == 1 and m["eos_id"] == 2 and m["vocab_size"] == tok.vocab_size
    assert m["counts"] == {"docs_in": 125, "bad_docs": 4, "empty_docs": 1}
    assert {e["line"] for e in m["errors"]} == {41, 42, 43, 45} and all(e["file"] for e in m["errors"])
    # documents come back in part order: part k holds docs[k::3]
    ordered = [doc for k in range(3) for doc in docs[k::3]]
    want = {s: [d_ for d_ in ordered if is_valid_doc(d_["id"], 1234, 0.1) == (s == "valid")] for s in ("train", "valid")}
    assert 0 < len(want["valid"]) < 40 and all(d_["text"] in [x["text"] for x in ordered] for d_ in docs[3:13:3])
    for s in ("train", "valid"):
        sh = TokenShards(d, s, tokenizer_sha256=tok.sha256)
        assert sh.num_docs == len(want[s]) == m["splits"][s]["docs"]
        assert sh.num_tokens == m["splits"][s]["tokens"] == sum(len(f) for f in sh.files)
        for i, doc in enumerate(want[s]):
            ids = sh.document(i)
            assert ids.dtype == np.dtype("<u2") and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
            assert tok.bos_id not in ids[1:] and tok.eos_id not in ids[:-1]
            assert tok.decode(ids[1:-1]) == doc["text"]
            assert ids[1:-1].tolist() == tok.encode(doc["text"])  # the word cache changes nothing
        assert sh.read(0, sh.num_tokens).tolist() == np.concatenate([sh.document(i) for i in range(sh.num_docs)]).tolist()
    # the raw format, without the reader
    e = m["splits"]["train"]["files"][0]
    raw = np.fromfile(d / e["bin"], dtype="<u2")
    offs = np.fromfile(d / e["idx"], dtype="<i8")
    assert offs[0] == 0 and offs[-1] == len(raw) == e["tokens"] and len(offs) == e["docs"] + 1
    assert sha256_file(d / e["bin"]) == e["sha256"]
    assert not (d / ".parts").exists() and (d / "tokenizer" / "spm.model").is_file()


def test_small_shards_and_merge_round_trip(env):
    root, tok, _ = env
    build(root, "s1")  # (already built by another test: skipped as up to date)
    ref = all_docs(root / "s1")
    m = build(root, "small", shard_tokens=500)
    files = m["splits"]["train"]["files"]
    assert len(files) > 3 and all(f["tokens"] <= 500 for f in files)
    assert [f["bin"] for f in files] == [f"train_{i:05d}.bin" for i in range(len(files))]
    got = all_docs(root / "small")
    assert all(np.array_equal(a, b) for s in ref for a, b in zip(ref[s], got[s], strict=True))
    sh = TokenShards(root / "small", "train")
    assert np.array_equal(sh.read(450, 200), TokenShards(root / "s1", "train").read(450, 200))  # across files
    merged = merge_shard_dirs([root / "s1", root / "small"], root / "merged", shard_tokens=10_000)
    assert merged["splits"]["train"]["docs"] == 2 * m["splits"]["train"]["docs"]
    both = all_docs(root / "merged")
    for s in ref:
        assert all(np.array_equal(a, b) for a, b in zip(ref[s] + ref[s], both[s], strict=True))


def test_deterministic_and_rerun_skips(env):
    root, _, _ = env
    a = build(root, "det_a", shard_tokens=700)
    names = [f["bin"] for s in ("train", "valid") for f in a["splits"][s]["files"]]
    mtimes = {n: (root / "det_a" / n).stat().st_mtime_ns for n in names}
    again = build(root, "det_a", shard_tokens=700)
    assert again == a and all((root / "det_a" / n).stat().st_mtime_ns == t for n, t in mtimes.items())
    b = build(root, "det_b", shard_tokens=700, batch_chars=300)  # small encode batches: same tokens
    assert _sig(a) == _sig(b)


def test_v1_shards_are_refused_with_the_fix_and_rebuilt_in_place(env):
    """Shards from before documents started with <s> (format v1) name `make shards`, which re-encodes them."""
    root, tok, _ = env
    a = build(root, "old")
    m = read_json(root / "old" / "manifest.json")
    m["format"] = "kogpt-shards-v1"
    (root / "old" / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ShardsError, match=r"kogpt-shards-v1.*make shards"):
        TokenShards(root / "old", "train")
    again = build(root, "old")
    assert again["format"] == "kogpt-shards-v2" and _sig(again) == _sig(a)
    assert TokenShards(root / "old", "train").document(0)[0] == tok.bos_id


def _sig(m: dict) -> list:
    return [(f["bin"], f["sha256"]) for s in m["splits"] for f in m["splits"][s]["files"]]


from corpus.shards.encode import _encode_part as _REAL_ENCODE  # noqa: E402


def _dies_on_third_part(task: dict) -> dict:
    if task["k"] == 2:
        raise RuntimeError("killed")
    return _REAL_ENCODE(task)


def test_interrupted_build_resumes_finished_parts(env, monkeypatch, caplog):
    import corpus.shards.build as shards

    root, _, _ = env
    monkeypatch.setattr(shards, "_encode_part", _dies_on_third_part)  # forked workers inherit it
    with pytest.raises(RuntimeError, match="killed"):
        build(root, "resume", shard_tokens=700)
    assert not (root / "resume" / "manifest.json").exists()
    assert sorted(p.name for p in (root / "resume" / ".parts").glob("*.done.json")) == \
        ["part-00000.done.json", "part-00001.done.json"]
    assert not list((root / "resume" / ".parts").glob(".*.tmp"))  # no half-written files left
    monkeypatch.setattr(shards, "_encode_part", _REAL_ENCODE)
    with caplog.at_level("INFO", logger="corpus.shards"):
        m = build(root, "resume", shard_tokens=700)
    assert "1 parts to encode (2 already done)" in caplog.text
    assert _sig(m) == _sig(build(root, "det_a", shard_tokens=700))


@pytest.mark.slow
def test_same_bytes_regardless_of_workers(env):
    root, _, _ = env
    one = build(root, "w1", workers=1, shard_tokens=900)
    two = build(root, "w2", workers=2, shard_tokens=900)
    three = build(root, "w3", workers=3, shard_tokens=900)  # 3 parts, 3 processes
    assert _sig(one) == _sig(two) == _sig(three)
    for name in ("w1", "w2", "w3"):
        for f in sorted((root / name).glob("*_*.*")):
            assert f.read_bytes() == (root / "w1" / f.name).read_bytes()


def test_refuses_to_mix_tokenizers(env, tmp_path):
    root, tok, docs = env
    build(root, "s1")
    other = train_small(tmp_path / "other", vocab=650)
    assert other.sha256 != tok.sha256
    with pytest.raises(ShardsError, match="different tokenizers"):
        merge_shard_dirs([root / "s1", _shards_with(other, tmp_path, docs)], tmp_path / "mixed")
    with pytest.raises(ShardsError, match="made with tokenizer sha256"):
        check_tokenizer(root / "s1", other.sha256)
    with pytest.raises(ShardsError, match="made with tokenizer sha256"):
        TokenShards(root / "s1", "train", tokenizer_sha256=other.sha256)
    check_tokenizer(read_json(root / "s1" / "manifest.json"), tok.sha256)  # the right one passes
    # building into a directory that holds another tokenizer's shards is refused
    cfg = small_config(root)
    cfg.shards.out_dir, cfg.tokenizer.model = str(root / "s1"), str(other.model_path)
    with pytest.raises(ShardsError, match="made with tokenizer sha256"):
        build_shards(cfg)


def _shards_with(tok, tmp: Path, docs: list[dict]) -> Path:
    write_clean_dir(tmp / "clean", docs[:10], parts=1)
    cfg = small_config(tmp)
    cfg.tokenizer.model = str(tok.model_path)
    build_shards(cfg, workers=1)
    return tmp / "shards"


def test_bare_spiece_via_tokenizer_model(env, tmp_path):
    """`tokenizer.model: PATH` (KoGPT2's .spiece) encodes without a trained tokenizer directory."""
    root, tok, docs = env
    spiece = tmp_path / "kogpt2_like.spiece"
    shutil.copy(tok.model_path, spiece)
    write_clean_dir(tmp_path / "clean", docs[:12], parts=1)
    cfg = small_config(tmp_path)  # its tokenizer.dir does not exist
    cfg.tokenizer.model = str(spiece)
    m = build_shards(cfg, workers=1)
    assert m["tokenizer_sha256"] == sha256_file(spiece) and m["tokenizer"]["source"] == str(spiece)
    assert m["splits"]["train"]["docs"] + m["splits"]["valid"]["docs"] == 12


def test_missing_inputs_are_clear_errors(tmp_path, env):
    root, tok, _ = env
    cfg = small_config(tmp_path)
    cfg.tokenizer.dir = str(tok.model_path.parent)
    with pytest.raises(ShardsError, match="make corpus"):
        build_shards(cfg)
    with pytest.raises(ShardsError, match="make shards"):
        TokenShards(tmp_path / "nowhere")


def test_valid_split_is_seeded_and_stable():
    keys = [f"doc-{i}" for i in range(20_000)]
    picked = [k for k in keys if is_valid_doc(k, 7, 0.05)]
    assert picked == [k for k in keys if is_valid_doc(k, 7, 0.05)]
    assert 800 < len(picked) < 1200
    assert picked != [k for k in keys if is_valid_doc(k, 8, 0.05)]
    assert not any(is_valid_doc(k, 7, 0.0) for k in keys[:100])


def test_inspect_cli(env, capsys):
    root, tok, docs = env
    build(root, "s1")
    assert main(["inspect", str(root / "s1"), "--docs", "1"]) == 0
    out = capsys.readouterr().out
    m = read_json(root / "s1" / "manifest.json")
    assert f"{m['splits']['train']['docs']:,}" in out and tok.sha256 in out
    first = TokenShards(root / "s1", "train").document(0)
    assert repr(tok.decode(first[1:-1])[:200]) in out
    assert "bad_docs 4" in inspect(root / "s1", docs=0)
    assert main(["inspect", str(root / "nowhere")]) == 2


def test_word_cache_encoder_matches_sentencepiece(env, tmp_path):
    import random

    import sentencepiece as spm

    from corpus.shards import WordCacheEncoder
    from corpus.tokenizer import Tokenizer

    root, tok, docs = env
    rng = random.Random(0)
    alphabet = list("가나다 라마  바사\n아ㅋ😀a1 .<mask>") + ["<unused1>", "\u3000", "\u00a0"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    texts += TRICKY + [d["text"] for d in docs[:30]]
    # min_hit_rate 0: always the cached-words road; 1.01: always in context, learning from the ids;
    # max_words 50: the cache fills up and new words are encoded without being kept.
    for kw in (dict(), dict(min_hit_rate=0.0), dict(min_hit_rate=1.01), dict(max_words=50, min_hit_rate=0.0)):
        enc = WordCacheEncoder(tok, **kw)
        assert enc.cache is not None
        for _ in range(2):                         # the second pass finds the words of the first
            for lo in range(0, len(texts), 37):
                batch = texts[lo:lo + 37]
                assert enc.encode(batch) == tok.sp.encode(batch), kw
        assert len(enc.cache) <= enc.max_words and enc.hits > 0
        learned = list(enc.cache)
        assert [enc.cache[w] for w in learned] == [tok.sp.encode(w) or [enc.space] for w in learned], kw
    # a model normalized with nmt_nfkc (spaces collapsed, NBSP -> space): no cache, plain encoding
    sent = tmp_path / "s.txt"
    sent.write_text("\n".join(SENTENCES * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(sent), model_prefix=str(tmp_path / "nfkc"), model_type="bpe",
                                   vocab_size=700, byte_fallback=True, minloglevel=2)
    other = Tokenizer.load(tmp_path / "nfkc.model")
    enc2 = WordCacheEncoder(other)
    assert enc2.cache is None and enc2.encode(texts[:50]) == other.sp.encode(texts[:50])
