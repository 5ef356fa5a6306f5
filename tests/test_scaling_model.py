"""bench/scaling_model.py: the parameter count, the allreduce law, and the command's inputs and outputs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import scaling_model as sm  # noqa: E402


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_parameter_count_is_the_torch_models(preset):
    from common.schema import MODEL_PRESETS
    from pretrain.engines.torch.model import GPT2, GPT2Shape
    p = MODEL_PRESETS[preset]
    shape = GPT2Shape(vocab_size=1000, num_layers=p["num_layers"], units=p["units"], num_heads=p["num_heads"],
                      max_length=p["max_length"])
    counts = sm.gpt2_params(p["num_layers"], p["units"], 4 * p["units"], 1000, p["max_length"])
    assert counts["total"] == GPT2(shape).num_params()


def test_base_gradient_is_half_a_gigabyte():
    counts = sm.gpt2_params(12, 768, 3072, 50_000, 1024)
    assert counts["total"] == 124_242_432
    assert 4 * counts["wte"] / (4 * counts["total"]) == pytest.approx(0.309, abs=1e-3)


def test_ring_law():
    inst = sm.INSTANCES["p5"]
    S = 1e9
    # two GPUs of one node: 2 alpha + S / B (the 2(p-1)/p factor is 1)
    two = sm.ring_allreduce_s(S, 2, 8, inst, 1.0, hierarchical=False)
    assert two == pytest.approx(2 * inst.intra_alpha_us * 1e-6 + S / (inst.intra_gbs * 1e9))
    # one node: both algorithms are the same ring
    assert sm.ring_allreduce_s(S, 8, 8, inst, 0.8, True) == sm.ring_allreduce_s(S, 8, 8, inst, 0.8, False)
    # across nodes the flat ring's bandwidth term is the node's EFA: 2(p-1)/p S / B_e
    flat = sm.ring_allreduce_s(S, 64, 8, inst, 1.0, False)
    lat = 2 * 7 * inst.inter_alpha_us * 1e-6 + (2 * 63 - 2 * 7) * inst.intra_alpha_us * 1e-6
    assert flat == pytest.approx(lat + 2 * 63 / 64 * S / (inst.inter_gbs * 1e9))
    # more fusion buffers pay the latency again, never the bandwidth
    assert sm.ring_allreduce_s(S, 64, 8, inst, 1.0, False, buffers=3) == pytest.approx(flat + 2 * lat)
    assert sm.ring_allreduce_s(S, 1, 8, inst, 1.0, False) == 0.0


def test_overlap_hides_at_most_all_but_the_tail_and_fp16_halves_the_bytes():
    counts = sm.gpt2_params(12, 768, 3072, 50_000, 1024)
    w = sm.Workload(counts["total"], counts["wte"], 1024, 512, 8, 128 * 2 ** 20)
    inst = sm.INSTANCES["p4d"]
    args = dict(w=w, inst=inst, p=64, tokens_per_s=180e3, fixed_s=0.002, eff=0.8, hierarchical=True)
    no = sm.predict(**args, overlap=1.0, fp16=False, use_overlap=False)
    yes = sm.predict(**args, overlap=1.0, fp16=False, use_overlap=True)
    assert no["exposed_comm_ms"] == pytest.approx(no["allreduce_ms"])
    assert yes["tail_allreduce_ms"] <= yes["exposed_comm_ms"] < no["exposed_comm_ms"]
    half = sm.predict(**args, overlap=0.0, fp16=True, use_overlap=False)
    assert half["allreduce_ms"] < 0.55 * no["allreduce_ms"] and half["cast_ms"] > 0
    with pytest.raises(ValueError, match="less than one each"):
        sm.predict(**{**args, "p": 1024}, overlap=0.5, fp16=False, use_overlap=True)


def test_overlap_fraction_from_overlap_py_json():
    data = {"overlap_fraction": {"eager": 0.9, "compile_model": 0.0, "compile_block": 0.8}, "results": []}
    assert sm.find_overlap(data) == (0.8, "compile_block")
    assert sm.find_overlap({"results": [{"name": "compile_model", "overlap_fraction": 0.1},
                                        {"name": "eager", "overlap_fraction": 0.9}]}) == (0.1, "compile_model")
    assert sm.find_overlap({"overlap_fraction": 0.25}) == (0.25, "overlap_fraction")
    assert sm.find_overlap({"results": [{"name": "x"}]}) is None


def test_command_writes_every_row(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert sm.main(["--instances", "p5", "--tokens-per-s", "600000", "--overlap", "0.3", "--out", str(out),
                    "--gloo-json", str(tmp_path / "none.json")]) == 0
    res = json.loads(out.read_text())
    assert res["overlap_fraction"] == 0.3 and res["overlap_source"] == "--overlap"
    rows = res["instances"][0]["rows"]
    assert len(rows) == 2 * 3 * 2 * 2 * 2             # scaling x GPU counts x algorithm x compression x overlap
    assert all(0 < r["efficiency"] <= 1 and math.isfinite(r["step_ms"]) for r in rows)
    strong_512 = [r for r in rows if r["scaling"] == "strong" and r["gpus"] == 512]
    assert {r["seqs_per_gpu"] for r in strong_512} == {1}
    assert "anchor: Horovod paper, 512 GPUs: ResNet-101 90%" in capsys.readouterr().out


def test_bad_overlap_is_refused(capsys):
    with pytest.raises(SystemExit):
        sm.main(["--overlap", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_single_gpu_speed_measured_on_that_gpu_is_used(tmp_path):
    tp = tmp_path / "tp.json"
    tp.write_text(json.dumps({"preset": "base", "device": "NVIDIA H200", "results": [{"name": "ours", "tokens_per_s": 5e5}],
                              "best": {"ours": {"micro_batch": 64, "tokens_per_s": 6e5}}}))
    assert sm.measured_tokens_per_s("H100", tp) == (6e5, "measured: tp.json (NVIDIA H200, micro-batch 64)")
    assert sm.measured_tokens_per_s("A100", tp) is None              # another GPU's figure is not used
    tp.write_text(json.dumps({"preset": "tiny", "device": "NVIDIA H100", "results": [{"name": "ours", "tokens_per_s": 1}]}))
    assert sm.measured_tokens_per_s("H100", tp) is None              # not GPT-2 base
