"""The model repository (``<repo>/<name>/<version>/policy.{onnx,json}``) and what is loaded from it.

Hot reload: :meth:`ModelRepository.poll` (run periodically) and the admin RPCs load a version in a
worker thread, validate it (:func:`runtime.model.load_version`) and swap the model's ``current``
reference, a single atomic assignment: requests in flight keep the object they already hold. A
version that fails validation is recorded as rejected (with its reason) and not retried until its
files change; the old version keeps serving. Whatever raises while loading (a mistyped policy.json
included) is such a rejection: it never stops start-up or the polling of other models.

Signature gate: polling serves a new version only if its signature (obs_dim, n_actions, agent ids,
action names) equals the served version's. Otherwise the version is *held* (validated, listed with
the change, counted, alertable) until an admin ``LoadModel`` names it. Roll-back serves the previous
version and blocks the rolled-back one from being picked up again by polling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.config import RuntimeConfig
from runtime.metrics import Metrics
from runtime.model import LoadedModel, ModelLoadError, load_version, signature_change
from runtime.names import valid_name, valid_version

log = logging.getLogger("inspo.runtime.repository")


class ModelNotFound(LookupError):
    pass


class SignatureChanged(ModelLoadError):
    """A version whose signature differs from the served one: served only when an admin names it."""


@dataclass
class ModelEntry:
    name: str
    current: LoadedModel | None = None
    versions: dict[str, LoadedModel] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # previously current versions, oldest first
    blocked: set[str] = field(default_factory=set)  # rolled back from: polling skips them
    pinned: set[str] = field(default_factory=set)  # shadow / canary versions: kept loaded, never auto-served


def _signature(folder: Path) -> tuple:
    out = []
    for name in ("policy.onnx", "policy.json"):
        try:
            st = (folder / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


class ModelRepository:
    def __init__(self, config: RuntimeConfig, metrics: Metrics, on_change: Callable[[], None] | None = None):
        self.config, self.metrics = config, metrics
        self.root = Path(config.model_repository)
        self.entries: dict[str, ModelEntry] = {}
        self.rejected: dict[tuple[str, str], tuple[tuple, str]] = {}
        # versions the signature gate holds back: (files, served signature then, reason)
        self.held: dict[tuple[str, str], tuple[tuple, tuple, str]] = {}
        self._info_series: dict[tuple[str, str], bool] = {}  # model_info label sets exported
        self.persist: Callable[[], None] = lambda: None  # set by the server: write the deployment state
        self.on_change = on_change or (lambda: None)
        self._lock = threading.RLock()

    # -- serving path --------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> LoadedModel:
        entry = self.entries.get(name)
        if entry is None or entry.current is None:
            raise ModelNotFound(f"model {name!r} is not served (served: {sorted(self.served())})")
        if not version:
            return entry.current
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound(
                f"model {name!r} version {version!r} is not loaded (loaded: {sorted(entry.versions, key=_vkey)})"
            )
        return model

    def served(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.current is not None]

    def any_loaded(self) -> bool:
        return any(e.current is not None for e in self.entries.values())

    # -- disk ----------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        if self.config.model_names:
            return [n for n in self.config.model_names if valid_name(n)]
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_name(p.name))

    def disk_versions(self, name: str) -> list[str]:
        if not valid_name(name):
            return []
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and valid_version(p.name)), key=_vkey)

    # -- loading -------------------------------------------------------------------------------
    def _load(self, name: str, version: str) -> LoadedModel:
        folder = self.root / name / version
        sig = _signature(folder)
        try:
            model = load_version(folder, name, self.config.model(name))
        except Exception as err:  # noqa: BLE001 - whatever raises, the version is rejected, never fatal
            reason = str(err) if isinstance(err, ModelLoadError) else f"{folder}: {type(err).__name__}: {err}"
            self.rejected[(name, version)] = (sig, reason)
            self.metrics.reloads.labels(name, "rejected").inc()
            log.error("rejected model %s version %s: %s", name, version, reason)
            raise ModelLoadError(reason) from None
        self.rejected.pop((name, version), None)
        self.metrics.model_load_duration.labels(name).observe(model.load_seconds)
        return model

    def _serve(self, entry: ModelEntry, model: LoadedModel, result: str = "ok") -> str:
        """Make ``model`` current (atomic reference swap) and evict versions beyond keep_versions."""
        with self._lock:
            previous = entry.current
            entry.versions[model.version] = model
            if previous is not None and previous.version != model.version:
                entry.history = [v for v in entry.history if v != previous.version] + [previous.version]
                self.metrics.model_info.labels(entry.name, previous.version).set(0)
                self._info_series[(entry.name, previous.version)] = True
            entry.history = [v for v in entry.history if v != model.version]
            entry.current = model  # the swap
            self._unhold(entry.name, model.version)
            keep = max(1, self.config.model(entry.name).keep_versions)
            keep_set = {model.version, *entry.history[-(keep - 1) :]} if keep > 1 else {model.version}
            keep_set |= entry.pinned
            for v in list(entry.versions):
                if v not in keep_set:
                    del entry.versions[v]
            for (name, v), _ in list(self._info_series.items()):
                if name == entry.name and v not in keep_set:  # released: its series goes too
                    self.metrics.model_info.remove(name, v)
                    del self._info_series[(name, v)]
            self._info_series[(entry.name, model.version)] = True
            self.metrics.model_info.labels(entry.name, model.version).set(1)
            self.metrics.model_loaded_timestamp.labels(entry.name).set(model.loaded_at)
            self.metrics.reloads.labels(entry.name, result).inc()
        log.info(
            "serving model %s version %s (was %s; load %.1f ms)",
            entry.name,
            model.version,
            previous.version if previous else None,
            model.load_seconds * 1e3,
        )
        self.on_change()
        self.persist()
        return previous.version if previous else ""

    def _hold(self, name: str, version: str, served: LoadedModel, reason: str) -> None:
        with self._lock:
            self.held[(name, version)] = (_signature(self.root / name / version), served.signature, reason)
            self.metrics.reloads.labels(name, "held").inc()
            self._export_held(name)
        log.warning(
            "held model %s version %s: %s; version %s keeps serving (LoadModel naming %s serves it)",
            name,
            version,
            reason,
            served.version,
            version,
        )

    def _unhold(self, name: str, version: str) -> None:
        if self.held.pop((name, version), None) is not None:
            self._export_held(name)

    def _export_held(self, name: str) -> None:
        self.metrics.held_versions.labels(name).set(sum(1 for n, _ in self.held if n == name))

    def load(self, name: str, version: str = "") -> tuple[LoadedModel, str]:
        """Admin load: ``version`` (or the newest on disk) becomes current; it is unblocked.

        Without a version, a newest version whose signature differs from the served one is refused
        (:class:`SignatureChanged`): serving it must be asked for by naming it.
        """
        with self._lock:
            versions = self.disk_versions(name)
            if not versions:
                raise ModelNotFound(f"model {name!r} has no versions in the model repository")
            named = bool(version)
            version = version or versions[-1]
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r} on disk (have {versions})")
            entry = self.entries.setdefault(name, ModelEntry(name))
            model = entry.versions.get(version)
            if model is None or _signature(model.path) != _signature(self.root / name / version):
                model = self._load(name, version)
            if not named and entry.current is not None:
                change = signature_change(entry.current, model)
                if change:
                    raise SignatureChanged(f"version {version}: {change}; name the version to serve it")
            entry.blocked.discard(version)
            entry.pinned.discard(version)
            previous = self._serve(entry, model)
            return model, previous

    def preload(self, name: str, version: str) -> LoadedModel:
        """Load ``name/version`` for a shadow or canary without serving it; polling will not serve it."""
        with self._lock:
            entry = self.entries.get(name)
            if entry is None or entry.current is None:
                raise ModelNotFound(f"model {name!r} is not served")
            model = entry.versions.get(version)
            if model is None:
                if version not in self.disk_versions(name):
                    raise ModelNotFound(f"model {name!r} has no version {version!r} on disk")
                model = self._load(name, version)
                entry.versions[version] = model
            entry.pinned.add(version)
            return model

    def unpin(self, name: str, version: str, block: bool = False) -> None:
        """Release a preloaded version; ``block`` keeps polling from serving it (a rolled-back candidate)."""
        with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                return
            entry.pinned.discard(version)
            if block and (entry.current is None or version != entry.current.version):
                entry.blocked.add(version)
                self.persist()

    def rollback(self, name: str, to_version: str = "") -> tuple[LoadedModel, str]:
        with self._lock:
            entry = self.entries.get(name)
            if entry is None or entry.current is None:
                raise ModelNotFound(f"model {name!r} is not served")
            current = entry.current.version
            if not to_version:
                candidates = [v for v in reversed(entry.history) if v != current]
                if not candidates:  # nothing loaded before: the next lower good version on disk
                    lower = [v for v in self.disk_versions(name) if _vkey(v) < _vkey(current)]
                    candidates = [v for v in reversed(lower) if (name, v) not in self.rejected]
                if not candidates:
                    raise ModelNotFound(f"model {name!r} has no earlier version to roll back to")
                to_version = candidates[0]
            model = entry.versions.get(to_version)
            if model is None:
                if to_version not in self.disk_versions(name):
                    raise ModelNotFound(f"model {name!r} has no version {to_version!r} to roll back to")
                model = self._load(name, to_version)
            entry.blocked.add(current)
            previous = self._serve(entry, model, "rollback")
            return model, previous

    # -- durable state (runtime/state.py) -------------------------------------------------------
    def snapshot(self) -> dict[str, dict]:
        """Per model: the version served and the versions rolled back from."""
        with self._lock:
            return {
                name: {
                    "serving": e.current.version if e.current else "",
                    "blocked": sorted(e.blocked, key=_vkey),
                }
                for name, e in sorted(self.entries.items())
                if e.current is not None or e.blocked
            }

    def restore(self, models: dict[str, dict]) -> dict[str, str]:
        """Re-block the rolled-back versions; return the version each model should serve again."""
        serve = {}
        for name, saved in models.items():
            if not valid_name(name) or not isinstance(saved, dict):
                continue
            blocked = {str(v) for v in saved.get("blocked") or [] if valid_version(str(v))}
            self.entries.setdefault(name, ModelEntry(name)).blocked |= blocked
            if valid_version(str(saved.get("serving") or "")):
                serve[name] = str(saved["serving"])
        return serve

    def poll(self, initial: dict[str, str] | None = None) -> list[str]:
        """Load the newest good version of every model when it is newer than the one served.

        ``initial``: at start-up, the version each model served before the restart (the state file);
        it is served again when it still loads. Returns ``name/version`` of every swap made. Never
        raises: a failing model is logged and the other models are still polled.
        """
        changed = []
        for name in self.model_names():
            try:
                swapped = self._poll_model(name, (initial or {}).get(name, ""))
            except Exception as err:  # noqa: BLE001 - one model must not stop the others
                log.error("polling model %s failed: %s: %s", name, type(err).__name__, err)
                continue
            if swapped:
                changed.append(f"{name}/{swapped}")
        return changed

    def _poll_model(self, name: str, restore: str = "") -> str:
        entry = self.entries.get(name)
        current = entry.current if entry else None
        if current is None and restore:
            try:
                model, _ = self.load(name, restore)
                return model.version
            except (ModelNotFound, ModelLoadError) as err:
                log.error(
                    "model %s: cannot serve version %s again (%s); polling picks one", name, restore, err
                )
                entry = self.entries.get(name)
        if current is not None and not self.config.model(name).auto_serve:
            return ""  # new versions wait for an admin call or a deployment
        blocked = entry.blocked if entry else set()
        for version in reversed(self.disk_versions(name)):
            if current is not None and _vkey(version) <= _vkey(current.version):
                break
            if version in blocked or (entry is not None and version in entry.pinned):
                continue
            files = _signature(self.root / name / version)
            seen = self.rejected.get((name, version))
            if seen is not None and seen[0] == files:
                continue  # rejected before and unchanged
            held = self.held.get((name, version))
            if held is not None and current is not None and held[:2] == (files, current.signature):
                continue  # held before, unchanged, and the served signature too
            try:
                model = self._load(name, version)  # slow: outside the lock, so requests never wait on it
            except ModelLoadError:
                continue  # logged and counted; try the next older one (or keep the current)
            with self._lock:
                entry = self.entries.setdefault(name, ModelEntry(name))
                if entry.current is not current or version in entry.blocked | entry.pinned:
                    return ""  # an admin call or a deployment changed the model meanwhile: decide next poll
                if current is not None:
                    change = signature_change(current, model)
                    if change:
                        self._hold(name, version, current, change)
                        continue
                self._serve(entry, model)
                return version
        return ""


def _vkey(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
