"""Simulators, rule controllers and metrics. No torch here (design.md §2)."""

from envs.registry import controller_names, dataset_plan, make_env, make_rule_controller

__all__ = ["controller_names", "dataset_plan", "make_env", "make_rule_controller"]
