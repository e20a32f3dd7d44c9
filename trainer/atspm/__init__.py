"""ATSPM performance measures of hi-res event logs, logged vs learned controller (docs/traffic.md)."""
