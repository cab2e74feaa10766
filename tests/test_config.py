"""Configs: paper defaults, per-family defaults, YAML files and --set overrides, checked and coerced."""
import pytest
import yaml

from offrl import config as cfg
from offrl import registry
from offrl.errors import OfflineRLError


def test_overrides_are_coerced_and_checked(tmp_path):
    info = registry.get("td3bc")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"alpha": 5, "hidden": [64, 64]}))
    c = cfg.resolve_config(info, "hopper", str(path), cfg.parse_set(["actor_lr=1e-4", "normalize_obs=false"]))
    assert (c.alpha, c.hidden, c.actor_lr, c.normalize_obs) == (5.0, (64, 64), 1e-4, False)
    assert isinstance(c.alpha, float)
    with pytest.raises(OfflineRLError, match="did you mean alpha"):
        cfg.apply(c, {"alpah": 1})
    with pytest.raises(OfflineRLError, match="expected an integer"):
        cfg.apply(c, {"batch_size": 2.5})
    with pytest.raises(OfflineRLError, match="key=value"):
        cfg.parse_set(["alpha"])


def test_a_literal_field_accepts_only_its_choices():
    c = cfg.resolve_config(registry.get("prdc"), "hopper", overrides={"nn_method": "brute"})
    assert c.nn_method == "brute"
    with pytest.raises(OfflineRLError, match="nn_method: expected one of auto, kdtree, brute, got 'foo'"):
        cfg.apply(c, {"nn_method": "foo"})


def test_hash_changes_with_the_config():
    info = registry.get("td3bc")
    a = cfg.resolve_config(info, "hopper")
    assert cfg.config_hash(a) == cfg.config_hash(cfg.resolve_config(info, "walker2d"))
    assert cfg.config_hash(a) != cfg.config_hash(cfg.apply(a, {"alpha": 3.0}))
