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


def test_every_agents_defaults_keep_their_own_rules():
    from offrl.trainer import TrainConfig

    cfg.validate(TrainConfig())
    for info in registry.all_agents():
        cfg.validate(cfg.resolve_config(info, "hopper"))
        for family, defaults in info.family_defaults.items():
            cfg.validate(cfg.apply(info.config_cls(), defaults))


@pytest.mark.parametrize("agent, key, value, rule", [
    ("td3bc", "tau", 0, "in (0, 1]"), ("td3bc", "tau", 1.5, "in (0, 1]"), ("td3bc", "discount", 1.01, "in [0, 1]"),
    ("td3bc", "policy_freq", 0, "> 0"), ("td3bc", "batch_size", -1, "> 0"), ("td3bc", "actor_lr", 0.0, "> 0"),
    ("td3bc", "hidden", [], "non-empty"), ("td3bc", "hidden", [64, 0], "> 0"), ("iql", "expectile", 1.0, "in (0, 1)"),
    ("csve", "dynamics_max_updates", 0, "> 0"), ("csve", "dynamics_seed", 2**32, "in [0, 4294967295]"),
])
def test_a_value_that_breaks_its_rule_is_named_with_the_rule(agent, key, value, rule):
    config = registry.get(agent).config_cls()
    with pytest.raises(OfflineRLError) as err:
        cfg.apply(config, {key: value})
    assert str(err.value).startswith(f"config key {key}: ") and str(err.value).endswith(f"must be {rule}")
    assert "\n" not in str(err.value)


def test_edge_values_inside_the_rules_are_accepted():
    c = cfg.apply(registry.get("td3bc").config_cls(), {"tau": 1, "discount": 0, "alpha": 0, "policy_freq": 1})
    assert (c.tau, c.discount, c.alpha, c.policy_freq) == (1.0, 0.0, 0.0, 1)
    c = cfg.apply(registry.get("csve").config_cls(), {"dynamics_max_updates": None, "dynamics_hidden": [8]})
    assert (c.dynamics_max_updates, c.dynamics_hidden) == (None, (8,))


def test_non_finite_numbers_and_wrong_types_in_unions_are_refused():
    c = registry.get("csve").config_cls()
    with pytest.raises(OfflineRLError, match="actor_lr: expected a finite number"):
        cfg.apply(c, {"actor_lr": float("nan")})
    with pytest.raises(OfflineRLError, match=r"dynamics_max_updates: expected an integer \(> 0\) or null, got 'a'"):
        cfg.apply(c, {"dynamics_max_updates": "a"})


def test_a_config_file_must_hold_a_mapping(tmp_path):
    for text in ("- 1\n- 2\n", "3\n"):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(OfflineRLError, match="must hold a mapping"):
            cfg.load_yaml(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("")
    assert cfg.load_yaml(tmp_path / "c.yaml") == {}
