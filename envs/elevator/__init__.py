"""Elevator group control: a batched simulator, traffic profiles and dispatch heuristics."""
