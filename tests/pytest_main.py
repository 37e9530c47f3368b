"""Entry point of the Bazel `py_test` targets: runs pytest on one test file.

pytest exits 5 when it ran no test. That is a failure here, except in one
case: every test file given was skipped as a whole because an optional
dependency is not installed (`pytest.importorskip("jax")` at module level
when the environment has only the runtime packages). Then the target passes
and says what was skipped and why. A file that collects nothing for any
other reason (no test functions, a misnamed test, a skip for another reason)
still fails.
"""

import os
import re
import sys

import pytest

# Modules of the optional extras (setup.py: jax, torch, viz). A test file
# that needs one of them skips itself when it is missing.
OPTIONAL_MODULES = ("jax", "torch", "matplotlib")

# The reason `pytest.importorskip` gives for a module that is not installed
# (pytest >= 8.2 skips only on ModuleNotFoundError, so a broken install of an
# optional module is still an error).
_MISSING_MODULE = re.compile(r"could not import '([\w.]+)': No module named")


def missing_optional_module(reason):
    """The optional module a skip reason says is missing, or None."""
    match = _MISSING_MODULE.search(reason)
    if match is None:
        return None
    module = match.group(1).split(".")[0]
    return module if module in OPTIONAL_MODULES else None


class CollectionSkips:
    """A pytest plugin that records every skip raised while collecting."""

    def __init__(self):
        self.reasons = []

    def pytest_collectreport(self, report):
        if report.skipped:
            # For a skipped collector, longrepr is (path, lineno, reason).
            self.reasons.append(str(report.longrepr[-1]))


def exit_code(pytest_exit_code, skip_reasons):
    """pytest's exit code, with "no tests ran" mapped to 0 when allowed.

    Allowed when at least one file was skipped at collection and every such
    skip names a missing optional module. Returns `(code, message)`;
    `message` is None unless the code was changed.
    """
    if pytest_exit_code != pytest.ExitCode.NO_TESTS_COLLECTED:
        return int(pytest_exit_code), None
    missing = [missing_optional_module(reason) for reason in skip_reasons]
    if not missing or None in missing:
        return int(pytest_exit_code), None
    modules = ", ".join(sorted(set(missing)))
    message = (
        f"SKIPPED: no tests ran because optional dependencies are not "
        f"installed ({modules}); install them with "
        f'`pip install -e ".[cpu,test]"` to run these tests.'
    )
    return 0, message


def main(args):
    argv = ["-p", "no:cacheprovider", "-v"]
    if os.environ.get("XML_OUTPUT_FILE"):  # Bazel's per-test XML report
        argv.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    skips = CollectionSkips()
    pytest_exit_code = pytest.main(argv + args, plugins=[skips])
    code, message = exit_code(pytest_exit_code, skips.reasons)
    if message:
        print(message)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
