"""What a model name and a version may look like, checked before either touches the filesystem or a label.

Names: 1-64 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit (so never ``..`` or a
path). Versions: 1-9 digits. Clients and admins get INVALID_ARGUMENT naming the field; folders in the
model repository that break the rule are skipped (docs/serving.md, "Model repository").
"""

from __future__ import annotations

import re

MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_VERSION = re.compile(r"[0-9]{1,9}")


class InvalidName(ValueError):
    """A model name or version that breaks the rule; ``field`` is the request field it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def valid_version(version: str) -> bool:
    return _VERSION.fullmatch(version) is not None


def check_name(name: str, field: str = "model") -> str:
    if not name:
        raise InvalidName(field, "required (the model name)")
    if not valid_name(name):
        raise InvalidName(
            field,
            f"{name[:80]!r} is not a model name (1-{MAX_NAME} characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit)",
        )
    return name


def check_version(version: str, field: str = "version") -> str:
    """An empty version is allowed (it means the served one); otherwise 1-9 digits."""
    if version and not valid_version(version):
        raise InvalidName(field, f"{version[:80]!r} is not a version (1-9 digits, e.g. '3')")
    return version


def check_ref(ref: str, field: str) -> str:
    """A deployment reference: ``""``, ``"rule"``, ``"name"`` or ``"name:version"``."""
    if not ref or ref == "rule":
        return ref
    name, _, version = ref.partition(":")
    if name:
        check_name(name, field)
    if ":" in ref:
        if not version:
            raise InvalidName(field, f"{ref[:80]!r}: empty version after ':'")
        check_version(version, field)
    return ref
