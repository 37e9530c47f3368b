"""Stub repositories so Bazel 4 (Debian bazel-bootstrap) never downloads.

Bazel's built-in WORKSPACE suffix fetches rules_cc, rules_java and
remote_coverage_tools with http_archive; declaring repos with the same names
first shadows them. The stubs forward to the native rules and give an empty
coverage filegroup, so `bazel coverage` is unsupported.
"""

def _fwd(names):
    return "".join(["def {n}(**kwargs):\n    native.{n}(**kwargs)\n".format(n = n) for n in names])

_FILES = {
    "rules_cc": {
        "BUILD": "",
        "cc/BUILD": 'alias(name = "toolchain_type", actual = "@bazel_tools//tools/cpp:toolchain_type", visibility = ["//visibility:public"])\n',
        "cc/defs.bzl": _fwd(["cc_binary", "cc_import", "cc_library", "cc_proto_library", "cc_test",
                             "cc_toolchain", "cc_toolchain_suite", "fdo_profile", "objc_library"]),
    },
    "rules_java": {
        "BUILD": "",
        "java/BUILD": "",
        "java/defs.bzl": _fwd(["java_binary", "java_import", "java_library", "java_lite_proto_library",
                               "java_package_configuration", "java_plugin", "java_proto_library",
                               "java_runtime", "java_test", "java_toolchain"]),
    },
    "remote_coverage_tools": {  # `bazel test` only needs these labels to exist
        "BUILD": 'package(default_visibility = ["//visibility:public"])\n' +
                 'filegroup(name = "coverage_report_generator")\nfilegroup(name = "lcov_merger")\n',
    },
}

def _stub_repo_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.attr.repo)
    for path, content in _FILES[rctx.attr.repo].items():
        rctx.file(path, content)

_stub_repo = repository_rule(
    implementation = _stub_repo_impl,
    attrs = {"repo": attr.string()},
    local = True,
)

def offline_bazel_deps():
    for name in _FILES:
        _stub_repo(name = name, repo = name)
