"""The docstring examples (``>>>``) of every mtfap module run, and print what they show."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import mtfap


def _is_absent_optional_piece(error: BaseException) -> bool:
    """An ImportError about something outside mtfap: an optional package or model file."""
    return isinstance(error, ImportError) and not (error.name or "").startswith("mtfap")


def _modules_with_examples() -> list[str]:
    """mtfap and every module under it whose source holds a ``>>>`` example.

    Sources are read, not imported, to choose; a package that fails to import is listed too,
    so that its test says why (walk_packages cannot look inside it).
    """
    unwalkable = []
    infos = list(pkgutil.walk_packages(mtfap.__path__, "mtfap.", onerror=unwalkable.append))
    names = [mtfap.__name__] if ">>>" in Path(mtfap.__file__).read_text(encoding="utf-8") else []
    for info in infos:
        origin = info.module_finder.find_spec(info.name).origin
        if ">>>" in Path(origin).read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names + unwalkable)


class _Runner(doctest.DocTestRunner):
    """Notes the examples that fail only because an optional piece is not installed."""

    def __init__(self):
        super().__init__(verbose=False)
        self.absent: list[str] = []

    def report_unexpected_exception(self, out, test, example, exc_info):
        if _is_absent_optional_piece(exc_info[1]):
            self.absent.append(exc_info[1].name or str(exc_info[1]))
        super().report_unexpected_exception(out, test, example, exc_info)


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run_as_shown(name):
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        if _is_absent_optional_piece(error):
            pytest.skip(f"{name} needs {error.name or error}, which is not installed")
        raise
    runner, failures, attempted = _Runner(), [], 0
    for test in doctest.DocTestFinder().find(module, name):
        absent_before, report = len(runner.absent), []
        result = runner.run(test, out=report.append)
        attempted += result.attempted
        # An example that needs an absent piece leaves its names undefined for the next ones,
        # so the whole docstring is set aside, not only that example.
        if result.failed and len(runner.absent) == absent_before:
            failures.append("".join(report))
    assert not failures, "\n".join(failures)
    if runner.absent:
        pytest.skip(f"some examples of {name} need {', '.join(sorted(set(runner.absent)))}, "
                    "which is not installed")
    if attempted == 0:
        pytest.skip(f"every example of {name} is marked +SKIP")
