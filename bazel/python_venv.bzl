"""Python toolchain for the interpreter that has TF/Keras installed.

Order: $KERAS_INTERP_PYTHON, then <workspace>/.venv/bin/python3, then python3
on PATH. Changing KERAS_INTERP_PYTHON re-runs this rule.
"""

_BUILD = """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")
py_runtime(name = "py3_runtime", interpreter_path = "{python}", python_version = "PY3")
py_runtime_pair(name = "py_runtime_pair", py3_runtime = ":py3_runtime")
toolchain(name = "toolchain", toolchain = ":py_runtime_pair",
          toolchain_type = "@bazel_tools//tools/python:toolchain_type")
"""

def _python_venv_impl(rctx):
    python = rctx.os.environ.get("KERAS_INTERP_PYTHON", "")
    if not python:
        ws = rctx.path(Label("//:WORKSPACE")).dirname
        venv = rctx.path("%s/.venv/bin/python3" % ws)  # Bazel 4: get_child() refuses "a/b"
        if venv.exists:
            python = str(venv)
    if not python:
        found = rctx.which("python3")
        if not found:
            fail("no python3: set KERAS_INTERP_PYTHON or create .venv")
        python = str(found)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", _BUILD.format(python = python))

python_venv = repository_rule(
    implementation = _python_venv_impl,
    environ = ["KERAS_INTERP_PYTHON"],
    local = True,
)
