"""Reading logs: validation, the dataset card, and conversion to padded training arrays."""

from trainer.logs.convert import LoadedLog, load_log, open_log
from trainer.logs.dataset import OfflineData
from trainer.logs.errors import LogValidationError

__all__ = ["LoadedLog", "LogValidationError", "OfflineData", "load_log", "open_log"]
