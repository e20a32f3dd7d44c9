"""The formats that trainer/ and runtime/ share: the Parquet log, the model card (policy.json), the shadow log.

Torch-free and imports nothing else of ours, so both sides (and the serving image) can depend on it.
"""
