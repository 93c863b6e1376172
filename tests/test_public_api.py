"""The public API: every documented name importable from mixq, lazily, without torch."""

from __future__ import annotations

import subprocess
import sys

import mixq
import mixq.errors


def test_every_export_resolves_and_all_matches_the_table() -> None:
    assert sorted(mixq.__all__) == sorted(mixq._EXPORTS)
    for name in mixq.__all__:
        assert getattr(mixq, name) is not None, name
    assert set(mixq.__all__) <= set(dir(mixq))


def test_every_error_class_is_exported() -> None:
    classes = {
        name
        for name, value in vars(mixq.errors).items()
        if isinstance(value, type) and issubclass(value, Exception | Warning)
    }
    assert classes <= set(mixq.__all__), sorted(classes - set(mixq.__all__))
    assert mixq.TrainConfigError is mixq.errors.TrainConfigError


def test_calibrate_is_the_function_after_its_module_is_imported() -> None:
    import mixq.calibrate  # the submodule import must not shadow the function

    assert callable(mixq.calibrate) and mixq.calibrate.__name__ == "calibrate"


def test_import_mixq_and_recipes_need_no_torch() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'scipy'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mixq\n"
        "r = mixq.Recipe.preset('rmsmp')\n"
        "assert mixq.Recipe.from_dict(r.to_dict()) == r\n"
        "assert issubclass(mixq.RecipeError, mixq.MixqError)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
