"""Simulators, rule controllers and metrics; no torch here (docs/architecture.md)."""

from envs.registry import controller_names, dataset_plan, make_env, make_rule_controller

__all__ = ["controller_names", "dataset_plan", "make_env", "make_rule_controller"]
