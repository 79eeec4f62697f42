"""The layering of the package, ground floor to top: the shared ground floor, the libraries'
own packages and the losses, the stages as siblings, the command line. A module imports only
from its own floor or below, no stage imports another, each external storage/data library is
imported in one package (ffcv: dataset/; zarr, fsspec and the object-store clients: store/),
`pct --help` loads neither torch nor ffcv, and every module imports on its own."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pct_pipeline"
FLOORS = {  # top-level unit of the package: its floor
    **dict.fromkeys(["__init__", "errors", "files", "options", "config_files", "progress",
                     "distributed", "allocator", "views", "boxes", "classes"], 0),
    **dict.fromkeys(["dataset", "store", "models", "losses", "codec_fidelity", "predictions"], 1),
    **dict.fromkeys(["precompute", "train", "evaluate", "analyze", "fidelity"], 2),
    "cli": 3, "__main__": 3,
}
STAGES = {unit for unit, floor in FLOORS.items() if floor == 2}
ALLOWED = {  # library: the top-level units of the package that may import it
    "ffcv": {"dataset"},
    "zarr": {"store"},
    "fsspec": {"store"},
    "botocore": {"store"},
    "aiohttp": {"store"},
    "timm": {"models"},
}
MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


def unit_of(module):
    """'train/run.py' -> 'train'; 'views.py' -> 'views'."""
    return module.split("/")[0].removesuffix(".py")


def imports(module, root=PACKAGE):
    """(external top-level names, package units) that `module` (a path under `root`) imports,
    wherever in the file (also inside functions); relative imports resolved against the
    module's package."""
    path = root / module
    package = ["pct_pipeline", *module.split("/")[:-1]]
    external, internal = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                (internal.add(parts[1]) if parts[0] == "pct_pipeline" and len(parts) > 1
                 else external.add(parts[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "pct_pipeline":
                    external.add(parts[0])
                    continue
            else:
                base = package[:len(package) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
            targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
            internal.update(t for t in targets if t not in ("__version__",))
    return external, internal - {"__version__"}


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_each_library_is_imported_in_its_own_package_only(library):
    importers = {m for m in MODULES if library in imports(m)[0]}
    assert {unit_of(m) for m in importers} <= ALLOWED[library], sorted(importers)
    assert importers, f"no module imports {library}: update ALLOWED"


def test_every_unit_has_a_floor():
    assert {unit_of(m) for m in MODULES} <= set(FLOORS), sorted({unit_of(m) for m in MODULES} - set(FLOORS))


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down_and_stages_are_siblings(module):
    here = unit_of(module)
    for target in imports(module)[1]:
        assert target in FLOORS, f"{module} imports unknown unit {target}"
        assert FLOORS[target] <= FLOORS[here], f"{module} ({FLOORS[here]}) imports {target} ({FLOORS[target]})"
        if here in STAGES and target in STAGES:
            assert target == here, f"stage {here} imports stage {target} ({module})"


def test_the_layering_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "m.py").write_text(
        "def f():\n    from zarr.storage import LocalStore\n    import ffcv.loader\n"
        "    from ..store import codecs\n    from .. import views, models\n"
        "    from .state import TrainState\n    import pct_pipeline.losses\n")
    external, internal = imports("train/m.py", root=tmp_path)
    assert external == {"zarr", "ffcv"} and internal == {"store", "views", "models", "train",
                                                         "losses"}


def test_help_loads_neither_torch_nor_ffcv():
    code = ("import sys\nfrom pct_pipeline.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ffcv', 'numba', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__.py"])
def test_every_module_imports_on_its_own(module):
    name = "pct_pipeline." + module[:-3].replace("/", ".").removesuffix(".__init__")
    importlib.import_module(name)
