"""symsm.cache: content-addressed, verified, atomic, private; reused across processes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import symsm
from symsm.backends.llvm import native
from symsm.core import cache
from symsm.core.errors import CacheError

ROOT = Path(__file__).resolve().parents[1]

COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, sympy as sp
    import symsm
    from symsm.core import cache
    x = sp.Symbol("x", real=True); m = sp.Symbol("m", real=True); s = sp.Symbol("s", positive=True)
    model = symsm.Model(-(x - m)**2 / (2*s**2) - sp.log(1 + x**2) * m**2, [x], [m, s], name="cache_probe")
    loss = model.compile()
    X = np.linspace(-2, 2, 101).reshape(-1, 1)
    value, grad = loss.value_and_grad(np.array([0.3, 1.2]), X)
    print(json.dumps({
        "events": [e.kind for e in cache.events() if "/" not in e.key],
        "code_events": [e.kind for e in cache.events() if "/" in e.key],
        "objects": sorted(p.name for p in loss.path.parent.glob(loss.path.stem + ".*.o")),
        "path": str(loss.path),
        "value": value,
        "grad": grad.tolist(),
        "numba_imported": "numba" in sys.modules,
    }))
    """
)


def run_probe(cache_dir: Path) -> dict:
    env = {**os.environ, "SYMSM_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_neither_regenerates_nor_recompiles(tmp_path):
    first = run_probe(tmp_path)
    second = run_probe(tmp_path)
    assert first["events"] == ["generated"]
    assert second["events"] == ["loaded"]
    assert first["path"] == second["path"]
    # machine code: compiled once (one object file for the one kernel called), loaded by the second process
    assert first["code_events"] == ["machine code compiled"] and second["code_events"] == ["machine code loaded"]
    assert len(first["objects"]) == 1 and first["objects"] == second["objects"]
    assert first["objects"][0].startswith(Path(first["path"]).stem + ".value_and_grad.")
    assert not second["numba_imported"]  # a warm start needs neither numba nor its compiler
    assert first["value"] == second["value"] and first["grad"] == second["grad"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700 or tmp_path.stat().st_uid == os.getuid()


@pytest.mark.slow
def test_corrupt_truncated_and_foreign_files_are_regenerated(tmp_path):
    reference = run_probe(tmp_path)
    path = Path(reference["path"])
    good = path.read_text()
    # corrupt one character of the body
    corrupt = good.replace("N_PARAMS = 2", "N_PARAMS = 3", 1)
    assert corrupt != good
    path.write_text(corrupt)
    again = run_probe(tmp_path)
    assert again["events"] == ["rejected", "generated"] and again["value"] == reference["value"]
    # truncated
    path.write_text(good[: len(good) // 2])
    assert run_probe(tmp_path)["events"] == ["rejected", "generated"]
    # a foreign file with a valid hash line but another key: not imported
    body = "# cache-key: " + "0" * 64 + "\nraise SystemExit('foreign code ran')\n"
    path.write_text(cache._with_hash(body))
    result = run_probe(tmp_path)
    assert result["events"] == ["rejected", "generated"] and result["value"] == reference["value"]
    assert path.read_text() == good


@pytest.mark.slow
def test_corrupt_or_foreign_object_files_are_recompiled_not_loaded(tmp_path):
    reference = run_probe(tmp_path)
    (obj,) = Path(reference["path"]).parent.glob(Path(reference["path"]).stem + ".*.o")
    good = obj.read_bytes()
    header, _, payload = good.partition(b"\n")
    # one flipped byte of machine code: the recorded sha256 no longer matches
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0xFF
    obj.write_bytes(header + b"\n" + bytes(flipped))
    again = run_probe(tmp_path)
    assert again["code_events"] == ["machine code compiled"] and again["value"] == reference["value"]
    assert obj.read_bytes() == good
    # a consistent hash over other code, recorded for another kernel: not ours, not loaded
    foreign = b"\x7fELF not a kernel"
    obj.write_bytes(native._object_header("symsm_other.value target", foreign) + foreign)
    again = run_probe(tmp_path)
    assert again["code_events"] == ["machine code compiled"] and again["value"] == reference["value"]
    # a symbolic link in its place is not followed
    obj.unlink()
    (tmp_path / "elsewhere.o").write_bytes(good)
    obj.symlink_to(tmp_path / "elsewhere.o")
    assert run_probe(tmp_path)["code_events"] == ["machine code compiled"]


def test_cache_dir_is_private(tmp_path, monkeypatch):
    target = tmp_path / "fresh" / "symsm"
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    assert cache.cache_dir() == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_world_writable_cache_dir_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o777)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    with pytest.raises(CacheError, match="writable by others"):
        cache.cache_dir()


def test_key_depends_on_everything_that_shapes_the_text():
    base = dict(model=["m"], backend="numba", dtype="float64", objective="exact", options={}, version="1")
    k = cache.cache_key(**base)
    assert len(k) == 64
    for field, other in [
        ("model", ["n"]),
        ("backend", "cuda"),
        ("dtype", "float32"),
        ("objective", "sliced"),
        ("options", {"n": 1}),
        ("version", "2"),
    ]:
        assert cache.cache_key(**{**base, field: other}) != k


def test_in_process_reuse_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    import sympy as sp

    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x - x**4, [x], [a], name="memo")
    first = model.compile()
    second = model.compile()
    kinds = [e.kind for e in cache.events() if e.key == first.key]
    assert kinds[-2:] == ["generated", "memory"]
    assert first.source == second.source


def test_info_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    import sympy as sp

    x, a = sp.symbols("x a", real=True)
    symsm.Model(a * x - x**6, [x], [a], name="clear_me").compile()
    info = cache.info()
    assert info["modules"] >= 1 and info["directory"] == str(tmp_path)
    assert cache.clear() >= 1
    assert cache.info()["modules"] == 0


# ---------------------------------------------------------------------------------------------- hardening
def _reference(theta, X):
    """J̃ and its gradient for the probe model, by hand with numpy (independent of symsm's derivation)."""

    def J(th):
        m, s = th
        x = X[:, 0]
        score = -(x - m) / s**2 - 2 * x * m**2 / (1 + x**2)
        hess = -1 / s**2 - 2 * m**2 * (1 - x**2) / (1 + x**2) ** 2
        return float(np.mean(hess + 0.5 * score**2))

    h = 1e-6
    grad = [(J(theta + h * e) - J(theta - h * e)) / (2 * h) for e in np.eye(2)]
    return J(theta), np.array(grad)


PROBE_THETA = np.array([0.3, 1.2])
PROBE_X = np.linspace(-2, 2, 101).reshape(-1, 1)


def _check_probe_result(result):
    value, grad = _reference(PROBE_THETA, PROBE_X)
    assert result["value"] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(result["grad"], grad, rtol=1e-6, atol=1e-9)


@pytest.fixture
def fresh_fallback(monkeypatch):
    """Each test sees the cache as a new process would: no fallback directory chosen yet."""
    monkeypatch.setattr(cache, "_fallback_dir", None)


def test_unusable_location_gives_a_warning_and_a_private_directory(tmp_path, monkeypatch, fresh_fallback):
    (tmp_path / "file").write_text("a regular file, so nothing can be created below it")
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot be used .*using the private temporary directory"):
        first = cache.cache_dir()
    assert first.is_dir() and stat.S_IMODE(first.stat().st_mode) == 0o700 and first.stat().st_uid == os.getuid()
    assert cache.cache_dir() == first  # one directory (and one warning) per process
    assert cache.info()["fallback_directory"] == str(first)


def test_directory_owned_by_another_user_is_refused_and_not_emptied(tmp_path, monkeypatch):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root (os.chown); the check itself runs everywhere")
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    planted = target / "symsm_0123.py"
    planted.write_text("raise SystemExit('planted code ran')\n")
    os.chown(target, 65534, 65534)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    with pytest.raises(CacheError, match=r"owned by another user \(uid 65534\); refusing to use it"):
        cache.cache_dir()
    with pytest.raises(CacheError, match="owned by another user"):
        cache.clear()
    assert planted.exists()
    assert cache.info()["status"].startswith("refused: cache directory")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777], ids=lambda m: f"{m:o}")
def test_directory_writable_by_group_or_others_is_refused(tmp_path, monkeypatch, mode):
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(mode)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    with pytest.raises(CacheError, match=f"writable by others \\(mode {mode & 0o777:o}\\)|mode {mode:o}"):
        cache.cache_dir()


def test_own_loose_directory_is_tightened_to_0700(tmp_path, monkeypatch):
    target = tmp_path / "loose"
    target.mkdir()
    target.chmod(0o755)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    assert cache.cache_dir() == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_location_inside_a_directory_anyone_can_rename_in_is_refused(tmp_path, monkeypatch):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # no sticky bit: anyone may rename our directory away and put theirs instead
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(open_dir / "mine" / "symsm"))
    with pytest.raises(CacheError, match="everyone may write to without the sticky bit"):
        cache.cache_dir()
    open_dir.chmod(0o1777)  # sticky, like /tmp: entries can only be renamed by their owner
    assert cache.cache_dir() == open_dir / "mine" / "symsm"


def test_shared_numba_cache_dir_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "numba-shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path / "symsm"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(shared))
    with pytest.raises(CacheError, match=r"NUMBA_CACHE_DIR .* is writable by others"):
        cache.cache_dir()


def test_env_var_overrides_the_location(tmp_path, monkeypatch):
    monkeypatch.delenv("SYMSM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_location() == tmp_path / "xdg" / "symsm"
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path / "chosen"))
    assert cache.default_location() == tmp_path / "chosen"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMSM_CACHE_DIR", "relative/dir")  # made absolute once, not re-read per cwd
    assert cache.default_location() == tmp_path / "relative" / "dir"


def _trivial_source(key: str, value: int) -> str:
    return f"# generated for a test\n{cache.KEY_PREFIX}{key}\nVALUE = {value}\n"


def test_key_must_be_in_the_header_and_symlinks_are_not_followed(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    key = cache.cache_key(test="header", nonce=str(tmp_path))
    path = cache.module_path(key)
    hidden = "VALUE = 666\n" + "# filler\n" * 60 + f"{cache.KEY_PREFIX}{key}\n"
    path.write_text(cache._with_hash(hidden))  # a valid self-hash, the key only in the body
    assert cache._read_verified(path, key) is None
    path.write_text(cache._with_hash(_trivial_source(key, 1)))
    assert cache._read_verified(path, key) == _trivial_source(key, 1)
    # a symlink to a verified file elsewhere is not ours: rejected, replaced by a regular file
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text(cache._with_hash(_trivial_source(key, 2)))
    path.unlink()
    path.symlink_to(elsewhere)
    module, got_path, _ = cache.load_or_generate(key, lambda: _trivial_source(key, 3))
    assert module.VALUE == 3 and got_path == path and not path.is_symlink()
    assert [e.kind for e in cache.events() if e.key == key] == ["rejected", "generated"]
    assert "VALUE = 2" in elsewhere.read_text()  # the target was not written through the link


def test_generated_source_without_its_key_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    key = cache.cache_key(test="no-key", nonce=str(tmp_path))
    with pytest.raises(CacheError, match="does not record its cache key"):
        cache.load_or_generate(key, lambda: "VALUE = 1\n")
    assert list(tmp_path.glob("symsm_*")) == []


def test_clear_removes_only_symsm_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    key = cache.cache_key(test="clear-only-ours", nonce=str(tmp_path))
    cache.load_or_generate(key, lambda: _trivial_source(key, 1))
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / f"symsm_{key[:32]}.value-10.py311.nbi").write_bytes(b"index")
    (tmp_path / f"symsm_{key[:32]}.value.0123456789abcdef.o").write_bytes(b"object")
    (tmp_path / "notes.txt").write_text("the user's own file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "symsm_lookalike.py").write_text("not in the cache's own folders")
    info = cache.info()
    assert (info["modules"], info["object_files"], info["numba_files"], info["status"]) == (1, 1, 1, "ok")
    assert cache.clear() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other"]
    assert (tmp_path / "other" / "symsm_lookalike.py").exists()


READ_ONLY_SCRIPT = COMPILE_SCRIPT.replace(
    "import json, sys", "import json, sys, warnings\nwarnings.simplefilter('always')"
)


def _read_only_setups():
    """Ways to make a cache location unwritable that work for the user running the tests.

    root ignores permission bits (chmod 0500 does not stop root from writing), so as root the location is
    a real read-only file system: a read-only bind mount in a private mount namespace (`unshare -m`), which
    nobody else sees and which disappears with the process. Everyone can use a path below a regular file.
    """
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    can_mount = False
    if root and shutil.which("unshare") and shutil.which("mount"):
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        can_mount = probe.returncode == 0
    return [
        pytest.param("below-a-file", id="below-a-regular-file"),
        pytest.param(
            "read-only-mount",
            id="read-only-bind-mount",
            marks=pytest.mark.skipif(not can_mount, reason="needs root and unshare -m (a private mount namespace)"),
        ),
        pytest.param(
            "no-permission",
            id="chmod-500",
            marks=pytest.mark.skipif(root, reason="root writes through chmod 500; the read-only mount covers root"),
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("how", _read_only_setups())
def test_read_only_location_falls_back_to_a_private_temporary_directory(tmp_path, how):
    location = tmp_path / "cache"
    cmd = [sys.executable, "-c", READ_ONLY_SCRIPT]
    if how == "below-a-file":
        (tmp_path / "file").write_text("a regular file")
        location = tmp_path / "file" / "cache"
    else:
        location.mkdir(mode=0o700)
        if how == "read-only-mount":
            mount = f"mount --bind {location} {location} && mount -o remount,ro,bind {location} {location}"
            cmd = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$0" "$@"', *cmd]
        else:
            location.chmod(0o500)
    env = {**os.environ, "SYMSM_CACHE_DIR": str(location)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "RuntimeWarning" in out.stderr and f"symsm cache location {location} cannot be used" in out.stderr
    assert "using the private temporary directory" in out.stderr
    used = Path(result["path"]).parent
    assert used != location and used.name.startswith("symsm-cache-")
    assert result["events"] == ["generated"]
    _check_probe_result(result)
    assert not used.exists()  # the private temporary directory is removed at exit
    if location.is_dir():
        assert list(location.iterdir()) == []


CONCURRENT_SCRIPT = COMPILE_SCRIPT.replace(
    "loss = model.compile()",
    "import os, time\ngo = sys.argv[1]\nwhile not os.path.exists(go):\n    time.sleep(0.005)\nloss = model.compile()",
)


@pytest.mark.slow
def test_eight_processes_compiling_the_same_model_leave_one_valid_entry(tmp_path):
    location = tmp_path / "cache"
    go = tmp_path / "go"
    env = {**os.environ, "SYMSM_CACHE_DIR": str(location), "NUMBA_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SCRIPT, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(1.0)  # let them import; each then waits for the same signal
    go.touch()
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for r in results:
        _check_probe_result(r)
        assert r["value"] == results[0]["value"] and r["grad"] == results[0]["grad"]
        assert r["events"] in (["generated"], ["loaded"])
        assert Path(r["path"]).parent == location  # SYMSM_CACHE_DIR is where the entry went
    assert any(r["events"] == ["generated"] for r in results)
    modules = sorted(location.glob("symsm_*.py"))
    assert [m.name for m in modules] == [Path(results[0]["path"]).name]
    key = next(line.split(": ")[1] for line in modules[0].read_text().splitlines() if line.startswith("# cache-key"))
    assert cache._read_verified(modules[0], key) is not None
    assert list(location.glob(".symsm_*")) == []  # no temporary files left behind
    assert stat.S_IMODE(location.stat().st_mode) == 0o700
