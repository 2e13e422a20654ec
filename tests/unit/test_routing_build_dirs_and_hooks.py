"""Routing by the directory a build tool is told to work in (make -C, make -f, ninja -C, cmake
--build, ctest --test-dir), and git hooks started by git on the host: the policy and the
library's Python twin agree."""

from qpod_engine.config.snapshot import Target
from qpod_engine.routing import preload_lib
from qpod_engine.routing.policy import decide, work_dirs

REPO = "/home/me/src/probe"
T = [Target(REPO, "old", ("make", "ninja", "cmake", "ctest", "gmake"), "repository binding", "master")]
ROOTS = [(REPO, ["make", "ninja", "cmake", "ctest", "gmake"])]


def where(argv: list[str], cwd: str = "/home/me", caller: str | None = None) -> tuple[str, str | None]:
    d = decide(f"/usr/bin/{argv[0]}", argv, cwd, T, caller=caller)
    twin = preload_lib.shim_root(f"/usr/bin/{argv[0]}", cwd, ROOTS, argv, caller=caller)
    return d.where, twin


def test_a_build_tool_given_a_bound_directory_goes_to_its_container() -> None:
    for argv in (
        ["make", "-C", REPO],
        ["make", f"-C{REPO}"],
        ["make", f"--directory={REPO}", "all"],
        ["make", "-C", "/home/me/src", "-C", "probe"],  # each -C relative to the last
        ["make", "-f", f"{REPO}/Makefile"],
        ["gmake", "-C", "src/probe"],  # relative to the cwd
        ["ninja", "-C", f"{REPO}/build"],
        ["cmake", "--build", f"{REPO}/build"],
        ["ctest", "--test-dir", f"{REPO}/build"],
    ):
        assert where(argv) == ("container", REPO), argv


def test_the_directory_named_decides_not_the_cwd() -> None:
    assert where(["make", "-C", "/tmp/elsewhere"], cwd=REPO) == ("host", None)
    assert where(["make", "-j8", "all"], cwd="/home/me") == ("host", None)
    assert where(["make", "--", "-C", REPO]) == ("host", None)  # after --: a target, not an option
    # a sibling sharing the prefix is not inside
    assert where(["make", "-C", REPO + "2"]) == ("host", None)


def test_work_dir_of_tools_without_such_options_is_the_cwd() -> None:
    assert work_dirs("gdb", ["gdb", "-C", "/x"], "/cwd") == ("/cwd",)
    assert work_dirs("cmake", ["cmake", "-S", "/src", "-B", "/b"], "/cwd") == ("/src",)  # configure: by its source


def test_a_makefile_in_no_bound_tree_leaves_it_to_where_make_works() -> None:
    """make -f /dev/null in a repository (make's idiom to print its variables) builds there."""
    assert work_dirs("make", ["make", "-f", "/dev/null"], REPO) == ("/dev", REPO)
    assert work_dirs("make", ["make", "-C", "sub", "-f", "/x/mk"], REPO) == ("/x", f"{REPO}/sub")
    assert where(["make", "-f", "/dev/null", "-p"], cwd=REPO) == ("container", REPO)
    assert where(["make", "-C", REPO, "-f", "/tmp/common.mk"]) == ("container", REPO)
    assert where(["make", "-f", "/dev/null"], cwd="/home/me") == ("host", None)
    # a makefile in a bound tree still decides, wherever make runs
    assert where(["make", "-f", f"{REPO}/Makefile"], cwd="/tmp") == ("container", REPO)


def test_git_hooks_started_by_git_run_on_the_host() -> None:
    hook = f"{REPO}/.githooks/pre-commit"
    for caller in ("git", "git-receive-pack"):
        d = decide(hook, [hook], REPO, T, caller=caller)
        assert d.where == "host" and "git hook" in d.reason
        assert preload_lib.shim_root(hook, REPO, ROOTS, [hook], caller=caller) is None
    # the same program started by anything else is a program of the repository
    assert decide(hook, [hook], REPO, T, caller="bash").where == "container"
    assert preload_lib.shim_root(hook, REPO, ROOTS, [hook], caller="bash") == REPO
    # git running a build (git bisect run make) still builds in the container
    assert decide("/usr/bin/make", ["make"], REPO, T, caller="git").where == "container"
