"""local/ (corpus preparation, top level) against the generic name `local`: an installed or
path-first `local` package does not change what recipe stage 1 runs, loading ours leaves
`sys.modules["local"]` alone, and installing s2s does not install a top-level `local`."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import setuptools
from helpers import REPO, copy_recipe

from s2s.cli.recipe import main as recipe_main
from s2s.recipe.corpus import load_corpus_module

FAKE_PREPARE = """
def prepare(out_root, **kwargs):
    raise RuntimeError("the unrelated `local` package ran")
"""


def _fake_local(root: Path) -> Path:
    """An unrelated `local` package with a docstrings module of its own under `root`."""
    pkg = root / "local"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("UNRELATED = True\n")
    (pkg / "docstrings.py").write_text(FAKE_PREPARE)
    return root


def test_a_local_package_first_on_the_path_does_not_change_stage_1(
    tmp_path: Path, monkeypatch
) -> None:
    """Recipe stage 1 with someone else's `local` first on sys.path (and imported) prepares
    the corpus with the repository's local/docstrings.py, and leaves theirs imported."""
    monkeypatch.syspath_prepend(str(_fake_local(tmp_path / "site")))
    monkeypatch.delitem(sys.modules, "local", raising=False)
    import local  # noqa: PLC0415  (theirs)

    shrink = {"prepare_args": {"modules": ["json", "textwrap", "argparse"], "dev_frac": 0.2}}
    root = copy_recipe(tmp_path / "tree", "docstrings/sum1", shrink)
    assert recipe_main(["--recipe-dir", str(root), "--stage", "1", "--stop_stage", "1"]) == 0
    for name in ("train", "dev", "test"):
        assert (root / "data" / name / "text.src").is_file()
    assert sys.modules["local"] is local and local.UNRELATED


def test_an_installed_local_outranks_ours_even_from_the_repository(tmp_path: Path) -> None:
    """From the repository root (the current directory, first on sys.path) an unrelated
    `local` later on the path is still the one `import local` gets: our local/ has no
    __init__.py, so it is at most a namespace package, which any regular package outranks."""
    fake = _fake_local(tmp_path / "site")
    path = os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(fake)]).lstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    check = [sys.executable, "-c", "import local; assert local.UNRELATED, local"]
    done = subprocess.run(check, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_loading_ours_leaves_theirs_in_place(tmp_path: Path, monkeypatch) -> None:
    fake = _fake_local(tmp_path)
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "local", raising=False)
    import local  # noqa: PLC0415  (theirs, first on sys.path)

    ours = load_corpus_module(REPO, "docstrings")
    assert Path(ours.__file__) == REPO / "local" / "docstrings.py"
    assert sys.modules["local"] is local and local.UNRELATED
    assert not ours.__name__.startswith("local")
    phrases = load_corpus_module(REPO, "phrases.prepare")  # a subpackage, relative imports
    assert phrases.generate_pairs is load_corpus_module(REPO, "phrases.grammar").generate_pairs
    with pytest.raises(ValueError, match=r"local/nope\.py nor .*local/nope/__init__\.py"):
        load_corpus_module(REPO, "nope")
    with pytest.raises(ValueError, match="no corpus preparation directory"):
        load_corpus_module(tmp_path / "elsewhere", "docstrings")


def test_installing_s2s_does_not_install_local() -> None:
    """setup.cfg's packages (what `pip install .` and `make`'s editable install map) hold s2s
    and kernels, never a top-level `local`."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options"]["packages"].strip() == "find:"
    include = cfg["options.packages.find"]["include"].split()
    found = setuptools.find_packages(where=str(REPO), include=include)
    assert "s2s" in found and "kernels" in found
    assert not [p for p in found if p == "local" or p.startswith("local.")]
    # What this environment's installed s2s provides: no `local` of ours, from anywhere but
    # the repository itself (a plain interpreter outside it, without PYTHONPATH).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = textwrap.dedent(
        """
        import importlib.util
        spec = importlib.util.find_spec("local")
        print(spec.origin if spec and spec.origin else "")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    origin = out.stdout.strip()
    assert not origin or REPO not in Path(origin).resolve().parents
