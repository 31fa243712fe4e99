"""Config layer: defaults for every section, loading, overrides, locking."""

from llama_adv.config.defaults import get_default_config, shrink_for_tests
from llama_adv.config.loading import (
    apply_overrides,
    load_config,
    parse_variant,
    same_run_config,
    set_value,
    to_json,
)

__all__ = [
    "apply_overrides",
    "get_default_config",
    "load_config",
    "parse_variant",
    "same_run_config",
    "set_value",
    "shrink_for_tests",
    "to_json",
]
