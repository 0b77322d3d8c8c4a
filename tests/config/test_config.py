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
    ("compare.seeds=[0, two]", "config key 'compare.seeds': expected list[int], item 1 is str 'two'"),
    ("compare.seeds=3", "config key 'compare.seeds': expected list[int], got int 3"),
    ("compare.seeds=[]", "config key 'compare.seeds': expected a non-empty list, got []"),
    ("data.label_names=[negative, 1]", "config key 'data.label_names': expected list[str], item 1 is int 1"),
    ("teacher.memory_share=0", "config key 'teacher.memory_share': 0.0 is out of range (0, 1]"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_choices_and_ranges_live_in_the_field_metadata():
    """Every section field's checks are its own metadata: a choice default is one of its choices,
    a ranged default lies in its range, list fields say their item type."""
    import dataclasses
    import typing

    from wakeword_dist.config_fields import Range, _field_types

    checked = 0
    for section in dataclasses.fields(Config):
        cls = section.default_factory().__class__
        hints = _field_types(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert hints[f.name] is not list, f"{section.name}.{f.name}: bare list, give its item type"
            if typing.get_origin(hints[f.name]) is list:
                assert all(isinstance(x, typing.get_args(hints[f.name])[0]) for x in default)
            if "choices" in f.metadata:
                items = default if isinstance(default, list) else [default]
                assert all(x in f.metadata["choices"] for x in items), f"{section.name}.{f.name}"
                checked += 1
            if "range" in f.metadata:
                assert isinstance(f.metadata["range"], Range) and default in f.metadata["range"], f.name
                checked += 1
    assert checked > 40


def test_coerce_handles_list_items_and_unions():
    from wakeword_dist.config_fields import _coerce

    assert _coerce("k", [1, "2.5"], list[float]) == [1.0, 2.5]
    assert _coerce("k", ["a"], list[str]) == ["a"]
    assert _coerce("k", None, int | None) is None
    assert _coerce("k", 4, float | None) == 4.0 and isinstance(_coerce("k", 4, float | None), float)
    assert _coerce("k", "x", int | str) == "x"
    with pytest.raises(ConfigError, match=r"^config key 'k': expected int \| None, got str 'x'$"):
        _coerce("k", "x", int | None)
    with pytest.raises(ConfigError, match=r"^config key 'k': expected list\[int\], item 0 is bool True$"):
        _coerce("k", [True], list[int])


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
