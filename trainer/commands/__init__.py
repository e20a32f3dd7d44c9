"""One module per ``inspo`` subcommand; each exposes ``register(subparsers)``."""
