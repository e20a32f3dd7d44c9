"""Offline training: logs I/O, collection, algorithms (InSPO and baselines), evaluation, export, CLI."""
