"""Reading logs: validation, the dataset card, and conversion to padded training arrays."""

from trainer.logs.dataset import OfflineData

__all__ = ["OfflineData"]
