"""The config tree: inheritance, --set overrides, and errors that name the key and the file."""
from pathlib import Path

import pytest

from common.config import ConfigError, build, load_config, save_resolved
from common.schema import Config, TrainConfig


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_inherit_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "model: {preset: tiny}\ntrain: {max_steps: 5, global_batch: 8}\n")
    child = write(tmp_path / "child.yaml", "inherit: base.yaml\ntrain: {global_batch: 16}\noptim: {lr: 3e-4}\n")
    cfg = load_config(child, ["train.max_steps=7", "corpus.workers=3"])
    assert cfg.model.num_layers == 2 and cfg.model.units == 64 and cfg.model.hidden_size == 256
    assert cfg.train.global_batch == 16 and cfg.train.max_steps == 7
    assert cfg.optim.lr == pytest.approx(3e-4)  # "3e-4" is a string in YAML 1.1; accepted as a number
    assert cfg.corpus.workers == 3
    assert cfg.train.shards == cfg.shards.out_dir  # "" means the shard stage's output


def test_unknown_key_names_file_and_key(tmp_path):
    write(tmp_path / "base.yaml", "train: {max_steps: 5}\n")
    child = write(tmp_path / "child.yaml", "inherit: base.yaml\ntrain: {max_stepz: 3}\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert "child.yaml" in str(e.value) and "train.max_stepz" in str(e.value) and "max_steps" in str(e.value)


def test_wrong_type_from_override_names_the_flag(tmp_path):
    cfg = write(tmp_path / "c.yaml", "train: {max_steps: 5}\n")
    with pytest.raises(ConfigError, match=r"--set train.max_steps=abc.*must be an integer"):
        load_config(cfg, ["train.max_steps=abc"])
    with pytest.raises(ConfigError, match="unknown key 'corpus.inputs\\[0\\].bogus'"):
        load_config(cfg, ["corpus.inputs=[{path: a.txt, bogus: 1}]"])


def test_validation_errors_name_the_file(tmp_path):
    cfg = write(tmp_path / "c.yaml", "model: {preset: tiny, units: 65}\n")
    with pytest.raises(ConfigError, match="c.yaml.*divisible"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(write(tmp_path / "d.yaml", "model: {preset: huge}\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_global_batch_must_factor():
    train = build(TrainConfig, {"global_batch": 24, "micro_batch": 4})
    assert train.accumulation(2) == 3
    with pytest.raises(ConfigError, match="not a multiple"):
        train.accumulation(4)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "name: x\nmodel: {preset: demo}\n"), ["optim.lr=0.001"])
    save_resolved(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg and isinstance(again, Config)


@pytest.mark.parametrize("entry,argv", [
    ("corpus.__main__", ["clean"]), ("corpus.tokenizer", []), ("corpus.shards", ["build"]),
    ("pretrain.train", []), ("pretrain.export", ["--checkpoint", "x", "--to", "hf", "y"]),
])
def test_every_stage_cli_reports_a_bad_key_without_a_traceback(entry, argv, capsys):
    """A typo in --set ends the command with exit 2 and one line naming the key, for every stage."""
    import importlib

    main = importlib.import_module(entry).main
    try:
        rc = main(argv + ["--config", "configs/tiny.yaml", "--set", "optim.lrr=1"])
    except SystemExit as e:       # argparse-style exits
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'optim.lrr'" in err and "Traceback" not in err, err
