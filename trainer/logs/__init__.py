"""Reading logs: validation, the dataset card, and conversion to padded training arrays."""

from trainer.logs.convert import LoadedLog, load_log, open_log
from trainer.logs.dataset import OfflineData
from trainer.logs.errors import LogValidationError
from trainer.logs.stream import ArrayCache, load_log_cached, stream_card

__all__ = [
    "ArrayCache",
    "LoadedLog",
    "LogValidationError",
    "OfflineData",
    "load_log",
    "load_log_cached",
    "open_log",
    "stream_card",
]
