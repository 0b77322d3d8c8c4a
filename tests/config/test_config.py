"""Typed config: every shipped YAML loads; errors name the key."""

from pathlib import Path

import pytest

from wakeword_dist.config import Config, ConfigError, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_default_is_the_demo():
    """No --config means configs/demo.yaml itself (the README's demo), not the dataclass defaults."""
    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert load_config(None).to_dict() == load_config(demo).to_dict()
    assert load_config(None).to_dict() != Config().to_dict(), "the demo file sets its own values"


def test_overrides_apply_with_yaml_types():
    cfg = load_config(None, ["distill.alpha=0.25", "train.seed=3", "compare.seeds=[4,5]", "teacher.trust_remote_code=true"])
    assert (cfg.distill.alpha, cfg.train.seed, cfg.compare.seeds, cfg.teacher.trust_remote_code) == (0.25, 3, [4, 5], True)


@pytest.mark.parametrize("override, message", [
    ("distill.alpah=0.5", "unknown config key 'distill.alpah'; did you mean 'distill.alpha'?"),
    ("trian.seed=1", "unknown config key 'trian'; did you mean 'train'?"),
    ("distill.alpha=1.5", "config key 'distill.alpha': 1.5 is out of range [0, 1]"),
    ("distill.temperature=0", "config key 'distill.temperature': 0.0 is out of range (0, inf)"),
    ("data.sample_rate=0", "config key 'data.sample_rate': 0 is out of range (0, inf)"),
    ("train.epochs=two", "config key 'train.epochs': expected int, got str 'two'"),
    ("teacher.placement=zero2", "config key 'teacher.placement': 'zero2' is not one of auto, replicate, zero3"),
    ("train.seed=true", "config key 'train.seed': expected int, got bool True"),
    ("teacher.fast_forward=[dense_pos_conv,flash]", "config key 'teacher.fast_forward': 'flash' is not one of "
     "fuse_feature_norm, channels_last_encoder, dense_pos_conv"),
    ("teacher.compile=max", "config key 'teacher.compile': 'max' is not one of none, default, "
     "max-autotune-no-cudagraphs, reduce-overhead"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_teacher_compile_and_cuda_graphs_are_exclusive():
    with pytest.raises(ConfigError, match="'teacher.compile' and 'teacher.cuda_graphs' are exclusive"):
        load_config(None, ["teacher.compile=default", "teacher.cuda_graphs=true"])


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  temprature: 2.0\n")
    with pytest.raises(ConfigError, match=r"'distill.temprature'; did you mean 'distill.temperature'"):
        load_config(bad)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_cross_field_check():
    with pytest.raises(ConfigError, match="snr_db_min"):
        load_config(None, ["augment.snr_db_min=30", "augment.snr_db_max=10"])
