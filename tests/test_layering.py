"""The layering of the package: each external storage/data library is imported in one place of the
package (ffcv: the dataset package; zarr: store.py; fsspec and the object-store clients:
location.py and store.py), and the package imports without cycles module by module."""
import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pct_pipeline"
ALLOWED = {  # library: the modules (paths under pct_pipeline/) that may import it
    "ffcv": {"dataset/reader.py", "dataset/writer.py", "dataset/decoder.py"},
    "zarr": {"store.py"},
    "fsspec": {"location.py", "store.py"},
    "botocore": {"location.py"},
    "aiohttp": {"location.py"},
}


def imported_roots(path):
    """The top-level package names `path` imports, wherever in the file (also in functions)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_each_library_is_imported_in_its_own_modules_only(library):
    importers = {m for m in MODULES if library in imported_roots(PACKAGE / m)}
    assert importers <= ALLOWED[library], sorted(importers - ALLOWED[library])
    assert importers, f"no module imports {library}: update ALLOWED"


def test_the_layering_check_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from zarr.storage import LocalStore\n    import ffcv.loader\n")
    assert imported_roots(sample) == {"zarr", "ffcv"}


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__.py"])
def test_every_module_imports_on_its_own(module):
    name = "pct_pipeline." + module[:-3].replace("/", ".").removesuffix(".__init__")
    importlib.import_module(name)
