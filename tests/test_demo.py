"""`make demo`'s script end to end, shortened: sample corpus -> clean -> tokenizer -> shards ->
`horovodrun -np 2` training stopped half way -> resume -> generated Korean text -> summary.

The config inherits configs/demo.yaml (same corpus, tokenizer size and model) with 20 steps instead
of 240 and every output under a temporary directory.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROMPT = "2019년 한해를 보내며,"
VOCAB = 4000            # configs/demo.yaml's tokenizer.vocab_size: ln(4000) = 8.29 nats is a uniform guess


@pytest.mark.slow
def test_demo_script_runs_the_whole_pipeline(tmp_path):
    if not (REPO / ".venv" / "bin" / "horovodrun").exists():
        pytest.skip("horovodrun is not built into .venv yet (make install)")
    w = tmp_path / "demo"
    cfg = tmp_path / "demo-short.yaml"
    cfg.write_text(f"""inherit: {REPO / 'configs' / 'demo.yaml'}
corpus: {{out_dir: {w / 'clean'}}}
tokenizer: {{dir: {w / 'tokenizer'}}}
shards: {{out_dir: {w / 'shards'}}}
train: {{out_dir: {w / 'run'}, max_steps: 20, eval_every: 10, log_every: 5}}
checkpoint: {{root: {w / 'run' / 'checkpoints'}, every_steps: 10}}
log: {{tensorboard: false}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "HOROVOD_"))}
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=dict(env, CONFIG=str(cfg)), capture_output=True,
                       text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    for stage in ("1/5 corpus", "2/5 train with horovodrun -np 2 until step 10", "3/5 resume", "4/5 generate",
                  "5/5 summary"):
        assert stage in out, stage
    assert "resumed from" in out
    assert (w / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000020"

    # the generated text itself (pretrain.generate prints "[i] <prompt><continuation>" per sample), not
    # the step title that quotes the prompt
    samples = re.findall(r"^\[(\d)\] (.*)$", r.stdout, re.M)
    assert [i for i, _ in samples] == ["1", "2", "3"], r.stdout[-3000:]
    continuations = [text[len(PROMPT):] for _, text in samples]
    assert all(text.startswith(PROMPT) for _, text in samples), samples
    hangul = [len(re.findall("[가-힣]", c)) for c in continuations]
    assert max(hangul) >= 5, samples            # the model writes Korean after the prompt

    # the final figures of the summary: 20 steps, a validation loss below a uniform guess over the vocab
    m = re.search(r"^steps trained\s+(\d+) \(last train loss ([\d.]+) nats/token\)$", r.stdout, re.M)
    assert m and int(m.group(1)) == 20 and 0 < float(m.group(2)) < math.log(VOCAB), r.stdout[-2000:]
    m = re.search(r"^validation\s+step (\d+): loss ([\d.]+) nats/token, perplexity ([\d.]+)$", r.stdout, re.M)
    assert m and int(m.group(1)) == 20, r.stdout[-2000:]
    loss, ppl = float(m.group(2)), float(m.group(3))
    assert 0 < loss < math.log(VOCAB) and ppl == pytest.approx(math.exp(loss), rel=2e-3)
    m = re.search(r"^throughput\s+([\d,]+) tokens/s", r.stdout, re.M)
    assert m and int(m.group(1).replace(",", "")) > 0
