"""Exact and near-duplicate detection (corpus/dedup.py)."""
from __future__ import annotations

import numpy as np

from common.schema import DedupConfig
from corpus.dedup import DedupHasher, DedupIndex, U64Set, exact_hash

BASE = ("대한민국의 수도는 서울특별시이다. 서울은 한강을 끼고 있으며 인구는 약 천만 명이다. 조선 시대부터 "
        "수도였으며 정치, 경제, 사회, 문화의 중심지 역할을 하고 있다. 지하철과 버스가 잘 발달되어 있다.")
OTHER = ("부산광역시는 대한민국 동남부에 있는 항구 도시이다. 해운대 해수욕장과 자갈치 시장이 유명하며 "
         "영화제가 열린다. 낙동강 하구에 위치하여 물류의 중심지로 성장하였다.")


def test_exact_hash():
    h = exact_hash(["가나다", "", "가나다", "가나다 ", "다나가"])
    assert h[0] == h[2] and len({h[0], h[1], h[3], h[4]}) == 4


def test_minhash_estimates_jaccard():
    hasher = DedupHasher(DedupConfig(num_perm=128))
    rows, sig = hasher.signatures([BASE, BASE.replace("천만", "구백만"), OTHER])
    assert rows.tolist() == [0, 1, 2]
    est = lambda i, j: float((sig[i] == sig[j]).mean())  # noqa: E731
    assert est(0, 1) > 0.6 and est(0, 2) < 0.1


def test_index_exact_and_near_across_batches():
    cfg = DedupConfig()
    hasher, index = DedupHasher(cfg), DedupIndex(cfg)
    near = BASE[:-1] + "!"   # one character changed
    b1 = [BASE, OTHER, BASE, "짧은 글"]
    ex, near_dup = index.decide(*hasher.hash_batch(b1))[:2]
    assert ex.tolist() == [False, False, True, False] and not near_dup.any()
    b2 = [near, "짧은 글", "완전히 새로운 내용의 문서로서 이전 문서들과는 아무 관련이 없는 다른 글입니다. 길이도 충분합니다."]
    ex, near_dup = index.decide(*hasher.hash_batch(b2))[:2]
    assert ex.tolist() == [False, True, False] and near_dup.tolist() == [True, False, False]


def test_dedup_switches():
    cfg = DedupConfig(exact=False, near=False)
    index = DedupIndex(cfg)
    ex, nd = index.decide(*DedupHasher(cfg).hash_batch([BASE, BASE]))[:2]
    assert not ex.any() and not nd.any()


def test_u64set_grows_and_finds():
    s = U64Set()
    rng = np.random.RandomState(0)
    keys = rng.randint(0, 2**62, size=5000, dtype=np.int64).astype(np.uint64)
    for i in range(0, 5000, 100):
        s.add(keys[i:i + 100])
    assert len(s) == 5000 and len(s.levels) < 12
    assert s.contains(keys).all() and not s.contains(keys + np.uint64(1)).any()


def test_plan_order_decision_equals_the_incremental_index():
    from corpus.dedup import first_occurrence, plan_order_duplicates

    cfg = DedupConfig(min_chars=0)
    hasher = DedupHasher(cfg)
    near = BASE[:-1] + "!"
    batches = [[BASE, OTHER, "짧은 글"], [near, BASE, "짧은 글", OTHER + " 끝."], [OTHER, near]]
    index = DedupIndex(cfg)
    inc = [index.decide(*hasher.hash_batch(b))[:2] for b in batches]
    ex, rows, keys, base = [], [], [], 0
    for b in batches:
        e, r, k = hasher.hash_batch(b)
        ex.append(e), rows.append(r + base), keys.append(k)
        base += len(b)
    e, n, _ = plan_order_duplicates(cfg, np.concatenate(ex), np.concatenate(rows), np.concatenate(keys))
    assert e.tolist() == np.concatenate([x[0] for x in inc]).tolist()
    assert n.tolist() == np.concatenate([x[1] for x in inc]).tolist() and n.any() and e.any()
    rng = np.random.RandomState(1)
    k = rng.randint(0, 2**62, size=20000, dtype=np.int64).astype(np.uint64) * np.uint64(3)
    k[rng.randint(0, 20000, 3000)] = k[rng.randint(0, 20000, 3000)]
    assert (first_occurrence(k) == first_occurrence(k, shard_above=100)).all()   # sliced sort, same answer
