"""Sample order, disjointness, resume and tokenizer checks of pretrain/train/data.py on contract-format shards."""

import numpy as np
import pytest

from pretrain.train.data import DataError, WindowDataset
from tests.train_fixtures import make_run_inputs

SEQ = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tok_dir, shard_dir = make_run_inputs(root, n_docs=200)
    from corpus.tokenizer import Tokenizer
    return shard_dir, Tokenizer.load(tok_dir)


def _ds(shards, split="train", seed=7):
    d, tok = shards
    return WindowDataset(str(d), split, SEQ, seed=seed, tokenizer_sha256=tok.sha256, vocab_size=tok.vocab_size)


def test_windows_tile_each_file_with_stride_seq_len(shards):
    ds = _ds(shards)
    files = ds.shards.files
    assert ds.num_samples == sum((len(f) - 1) // SEQ for f in files)
    n0 = (len(files[0]) - 1) // SEQ
    np.testing.assert_array_equal(ds.window(0), files[0][:SEQ + 1])
    np.testing.assert_array_equal(ds.window(3), files[0][3 * SEQ:4 * SEQ + 1])
    np.testing.assert_array_equal(ds.window(n0), files[1][:SEQ + 1])      # windows never span files
    assert ds.window(5).dtype == np.int32 and ds.window(5).shape == (SEQ + 1,)


def test_global_batch_is_the_same_for_any_world_size_and_ranks_are_disjoint(shards):
    ds = _ds(shards)
    global_batch, micro = 8, 2
    for cursor in (0, 40, ds.num_samples - 3):       # the last one wraps into the next epoch
        ref = ds.samples(cursor, global_batch)
        for world in (1, 2, 4):
            accum = global_batch // (micro * world)
            parts = [np.concatenate(ds.batch_for_step(cursor, r, world, micro, accum)) for r in range(world)]
            np.testing.assert_array_equal(np.concatenate(parts), ref)
            for b in ds.batch_for_step(cursor, 0, world, micro, accum):
                assert b.shape == (micro, SEQ + 1)
    idx = [ds.sample_index(c) for c in range(ds.num_samples)]
    assert sorted(idx) == list(range(ds.num_samples))          # an epoch visits every window once
    assert idx != list(range(ds.num_samples))                  # ... in shuffled order


def test_order_depends_on_seed_and_epoch_only(shards):
    a, b, c = _ds(shards, seed=7), _ds(shards, seed=7), _ds(shards, seed=8)
    n = a.num_samples
    assert [a.sample_index(i) for i in range(n)] == [b.sample_index(i) for i in range(n)]
    assert [a.sample_index(i) for i in range(n)] != [c.sample_index(i) for i in range(n)]
    assert [a.sample_index(i) for i in range(n)] != [a.sample_index(n + i) for i in range(n)]  # new epoch


def test_resume_from_cursor_continues_the_same_stream(shards):
    ds = _ds(shards)
    g = 8
    run = [ds.batch_for_step(k * g, 0, 1, 2, 4) for k in range(6)]
    resumed = _ds(shards)                                   # fresh object, as after a restart
    for k in range(3, 6):
        got = resumed.batch_for_step(k * g, 0, 1, 2, 4)
        for x, y in zip(got, run[k]):
            np.testing.assert_array_equal(x, y)


def test_eval_batches_are_deterministic_and_split_across_ranks(shards):
    ds = _ds(shards, split="valid")
    one = np.concatenate(list(ds.eval_batches(0, 1, 2, 3)))
    again = np.concatenate(list(ds.eval_batches(0, 1, 2, 3)))
    np.testing.assert_array_equal(one, again)
    two = [list(ds.eval_batches(r, 2, 2, 3)) for r in range(2)]
    n = min(ds.num_samples, 3 * 2)
    got = sorted(tuple(row) for r in two for b in r for row in b)
    want = sorted(tuple(ds.window(j)) for j in range(n))
    assert got == want == sorted(tuple(row) for row in one)           # same set for 1 and 2 workers


def test_refuses_shards_of_another_tokenizer(shards):
    d, tok = shards
    with pytest.raises(DataError, match="tokenizer"):
        WindowDataset(str(d), "train", SEQ, tokenizer_sha256="0" * 64)


def test_too_short_split_is_a_clear_error(shards):
    d, tok = shards
    with pytest.raises(DataError, match="seq_len"):
        WindowDataset(str(d), "valid", 10 ** 6, tokenizer_sha256=tok.sha256)
