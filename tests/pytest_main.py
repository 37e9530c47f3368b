import os
import sys

import pytest

if __name__ == "__main__":
    argv = ["-p", "no:cacheprovider", "-v"]
    if os.environ.get("XML_OUTPUT_FILE"):  # Bazel's per-test XML report
        argv.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    # Exit 5 (no tests) fails the target.
    sys.exit(pytest.main(argv + sys.argv[1:]))
