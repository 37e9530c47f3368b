"""File helpers shared by the tests (imported as `helpers.files`)."""

import hashlib
import os


def tree_digest(root):
    """`{relative path: sha256 hex digest}` of every file under `root`."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return digests
