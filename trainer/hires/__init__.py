"""Controller hi-res event logs (ATSPM layout) in: ``inspo data import hires`` (docs/traffic.md)."""
