"""The models the cloud serves, by name and version; new versions are loaded while requests keep flowing.

Bundles come from ``--bundle DIR`` (served as version 1) and from a model repository laid out like Triton's,
``ROOT/<model>/<version>/`` with a bundle in each version directory. :meth:`ModelRepository.scan` loads the
versions that appeared and retires those that went away; the server runs it every ``--poll-s`` seconds and on
SIGHUP. Loading happens off to the side; the swap is one assignment, so a request sees the old set or the new one,
and a retired version finishes what it has queued (its later requests run unbatched): none are dropped.

A version is immutable once loaded: publish a change as a new version directory. Copy it under another name and
rename it into place; a bundle caught half-copied fails its content-hash check and is tried again at the next scan.

Which version answers a request: the one it names; else, when it carries a bundle hash, the loaded version with
that hash (an edge keeps talking to the version it was built for during a roll-out); else the highest.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from cloud.errors import FailedPrecondition, ModelNotFound
from cloud.model import TailModel
from cloud.names import MODEL_NAME, validate_model_name
from protos.bundle import MANIFEST, Bundle, BundleError

__all__ = ["ModelRepository"]

log = logging.getLogger("edgesplit.cloud")

_VERSION = re.compile(r"[1-9][0-9]{0,17}")

ModelFactory = Callable[[Bundle, str], TailModel]
"""Builds the served model for a bundle and a version (the server's threads, batching and metrics)."""


class ModelRepository:
    """Served models by name and version (copy-on-write: readers take no lock)."""

    def __init__(self, factory: ModelFactory, root: str | Path | None = None) -> None:
        self._factory = factory
        self.root = Path(root) if root is not None else None
        self._lock = threading.Lock()  # serialises writers
        self._models: dict[str, dict[str, TailModel]] = {}
        self._scanned: set[tuple[str, str]] = set()  # versions that came from the root (scan may retire them)
        self._failed: dict[Path, float] = {}  # version directory -> manifest mtime of a failed load

    def add_bundles(self, paths: Iterable[str | Path]) -> None:
        """Load each bundle directory as version 1 of its model; a model given twice is an error."""
        for path in paths:
            bundle = Bundle.load(path)
            name = validate_model_name(bundle.manifest.model)
            if name in self._models:
                raise BundleError(f"model {name!r} is given twice (--bundle {path}); serve versions from a repository")
            self._publish(name, "1", self._factory(bundle, "1"))

    def scan(self) -> list[str]:
        """Sync with the repository root: load new versions, retire removed ones; returns what changed."""
        if self.root is None:
            return []
        if not self.root.is_dir():
            raise OSError(f"model repository {self.root} is not a directory")
        found = dict(self._walk(self.root))
        changes = []
        for (name, version), path in sorted(found.items()):
            if (name, version) not in self._scanned and self._load(name, version, path):
                changes.append(f"loaded {name} version {version}")
        for name, version in sorted(self._scanned - found.keys()):
            self._retire(name, version)
            changes.append(f"retired {name} version {version}")
        return changes

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        """Served model names."""
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        """Loaded versions of ``name``, oldest first."""
        return sorted(self._models.get(name, {}), key=int)

    def models(self) -> list[TailModel]:
        """Every loaded model version."""
        return [m for versions in self._models.values() for m in versions.values()]

    def get(self, name: str, version: str = "", content_hash: object = None) -> TailModel:
        """The model version for a request (see the module's docstring); NOT_FOUND lists what is served."""
        versions = self._models.get(name)
        if versions is None:
            validate_model_name(name)
            raise ModelNotFound(f"unknown model {name!r}; served models: {self.names()}")
        if version:
            model = versions.get(version)
            if model is None:
                raise ModelNotFound(f"model {name!r} has no version {version[:40]!r}; versions: {self.versions(name)}")
            model.check_hash(content_hash)
            return model
        if content_hash is not None:
            for version in sorted(versions, key=int, reverse=True):  # the newest of those built from that bundle
                if versions[version].content_hash == content_hash:
                    return versions[version]
            hashes = {v: m.content_hash for v, m in versions.items()}
            raise FailedPrecondition(
                f"no version of model {name!r} has bundle hash {content_hash!r}; served: {hashes}:"
                " edge and cloud must load the same bundle"
            )
        return versions[max(versions, key=int)]

    def close(self) -> None:
        """Retire every model (their queues finish)."""
        for model in self.models():
            model.close()

    def _walk(self, root: Path) -> Iterable[tuple[tuple[str, str], Path]]:
        for model_dir in sorted(root.iterdir()) if root.is_dir() else []:
            if not model_dir.is_dir() or not MODEL_NAME.fullmatch(model_dir.name) or ".." in model_dir.name:
                continue
            for version_dir in model_dir.iterdir():
                if _VERSION.fullmatch(version_dir.name) and (version_dir / MANIFEST).is_file():
                    yield (model_dir.name, version_dir.name), version_dir

    def _load(self, name: str, version: str, path: Path) -> bool:
        mtime = (path / MANIFEST).stat().st_mtime
        if self._failed.get(path) == mtime:
            return False  # failed before and unchanged since: do not retry (or log) it every scan
        try:
            bundle = Bundle.load(path)
            if bundle.manifest.model != name:
                raise BundleError(f"the bundle is model {bundle.manifest.model!r}, its directory says {name!r}")
            model = self._factory(bundle, version)
        except (BundleError, OSError, ValueError) as exc:
            self._failed[path] = mtime
            log.warning("not loading %s version %s from %s: %s", name, version, path, exc)
            return False
        self._failed.pop(path, None)
        self._publish(name, version, model)
        self._scanned.add((name, version))
        log.info("loaded %s version %s from %s", name, version, path)
        return True

    def _publish(self, name: str, version: str, model: TailModel) -> None:
        with self._lock:
            models = {n: dict(v) for n, v in self._models.items()}
            models.setdefault(name, {})[version] = model
            self._models = models

    def _retire(self, name: str, version: str) -> None:
        with self._lock:
            models = {n: dict(v) for n, v in self._models.items()}
            model = models[name].pop(version)
            if not models[name]:
                del models[name]
            self._models = models
        self._scanned.discard((name, version))
        model.close()
        log.info("retired %s version %s", name, version)
