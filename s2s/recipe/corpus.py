"""Loading a corpus preparer from the repository's top-level ``local/`` (docs/data.md).

``local/`` holds the corpus-specific preparation (ESPnet's and icefall's name for it), beside
``s2s/`` and ``kernels/``. ``local`` is a generic import name: an unrelated ``local`` package
exists on the package index and may be installed. Neither may hide the other:

- ours is never imported by that name: recipe stage 1 loads ``<repo>/local/`` by path, as a
  package under a private name derived from that path (``_s2s_local_<hash>``), so whatever
  ``local`` ``sys.path`` or ``sys.modules`` holds is neither used nor replaced;
- ours is not installed (setup.cfg packages s2s and kernels only), and ``local/`` has no
  ``__init__.py``: seen from the repository root (the current directory is first on
  ``sys.path``) it is at most a namespace package, which any installed regular ``local``
  package outranks, whatever the order of ``sys.path``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _package_name(local_dir: Path) -> str:
    digest = hashlib.sha256(str(local_dir).encode()).hexdigest()[:12]
    return f"_s2s_local_{digest}"


def load_corpus_module(repo: str | Path, name: str) -> ModuleType:
    """Import ``<repo>/local/<name>`` (dotted for a subpackage: ``phrases.prepare``).

    Raises ValueError naming the path when ``<repo>/local`` or the module is not there."""
    local_dir = (Path(repo) / "local").resolve()
    if not local_dir.is_dir():
        raise ValueError(f"{local_dir}: no corpus preparation directory (local/)")
    package = _package_name(local_dir)
    if package not in sys.modules:
        # An empty package whose submodules are found in local/ (which has no __init__.py).
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(local_dir)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith(package):
            raise  # something the preparer itself imports is missing
        path = local_dir.joinpath(*name.split("."))
        raise ValueError(
            f"corpus {name!r}: neither {path}.py nor {path}/__init__.py exists"
        ) from None
