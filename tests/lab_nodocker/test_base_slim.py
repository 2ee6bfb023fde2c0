"""The lab's base image is slim: what `slim_rootfs` leaves in a debootstrap tree, checked
against what dpkg itself unpacks under the same path filters. No Docker needed; dpkg and
dpkg-deb run for real in a folder of the test's own (`dpkg --root`).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.lab import base
from cloudstack_deploy.lab.base import (
    SLIM_APT_FILE,
    SLIM_DPKG_FILE,
    base_recipe,
    recipe_hash,
    slim_rootfs,
)

PACKAGE_FILES = (
    "usr/bin/slimcheck",
    "usr/share/doc/slimcheck/copyright",
    "usr/share/doc/slimcheck/README.Debian",
    "usr/share/doc/slimcheck/changelog.Debian.gz",
    "usr/share/doc/slimcheck/examples/demo.conf",
    "usr/share/doc-base/slimcheck",            # a sibling of /usr/share/doc, not inside it
    "usr/share/man/man1/slimcheck.1.gz",
    "usr/share/man/de/man1/slimcheck.1.gz",
    "usr/share/info/slimcheck.info.gz",
    "usr/share/locale/de/LC_MESSAGES/slimcheck.mo",
    "usr/share/locale/locale.alias",
    "usr/share/lintian/overrides/slimcheck",
    "usr/share/zoneinfo/Etc/UTC",
    "usr/lib/locale/C.utf8/LC_CTYPE",         # C.UTF-8 (PostgreSQL's initdb in the lab needs it)
    "usr/share/postgresql-common/pg_wrapper",
)


def _tree(root: Path) -> set[str]:
    """Every file, link and folder under ``root`` (relative), without dpkg's own database."""
    return {p.relative_to(root).as_posix() + ("/" if p.is_dir() and not p.is_symlink() else "")
            for p in root.rglob("*") if "var/lib/dpkg" not in p.relative_to(root).as_posix()
            and p.relative_to(root).as_posix() not in ("var", "var/lib")}


def _write(root: Path, rel: str, data: str = "x\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


def test_the_base_keeps_exactly_what_dpkg_unpacks_under_its_filters(tmp_path: Path) -> None:
    """The files already in the debootstrap tree are cut as dpkg cuts a later install's (the
    `path-exclude`/`path-include` lines of SLIM_DPKG given to dpkg as options): the last
    matching line decides, `*` crosses slashes, copyright files stay, /usr/share/doc-base is not
    /usr/share/doc, folders and links under /usr/share/doc stay (an include might be under
    them), other excluded links and folders go (the filtered folder itself stays)."""
    if shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg and dpkg-deb are needed to compare with dpkg's own filtering")
    pkg = tmp_path / "pkg"
    for rel in PACKAGE_FILES:
        _write(pkg, rel)
    (pkg / "usr/share/doc/slimcheck-data").symlink_to("slimcheck")  # as packages link their docs
    (pkg / "usr/share/man/man1/slimcheck-alias.1.gz").symlink_to("slimcheck.1.gz")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text("Package: slimcheck\nVersion: 1\nArchitecture: all\n"
                                            "Maintainer: lab <lab@example.invalid>\nDescription: test\n")
    deb = tmp_path / "slimcheck.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    by_dpkg = tmp_path / "by-dpkg"
    (by_dpkg / "var/lib/dpkg/info").mkdir(parents=True)
    (by_dpkg / "var/lib/dpkg/updates").mkdir()
    (by_dpkg / "var/lib/dpkg/status").write_text("")
    filters = [f"--{word}={pattern}" for word, _, pattern in
               (line.partition(" ") for line in base.SLIM_DPKG.splitlines())
               if word in ("path-exclude", "path-include")]
    assert len(filters) >= 8, filters
    proc = subprocess.run(["dpkg", f"--root={by_dpkg}", "--force-not-root", "--force-script-chrootless",
                           "--log=/dev/null", *filters, "-i", str(deb)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    ours = tmp_path / "ours"
    shutil.copytree(pkg, ours, symlinks=True, ignore=shutil.ignore_patterns("DEBIAN"))
    removed = slim_rootfs(ours)
    for rel in (SLIM_DPKG_FILE, SLIM_APT_FILE):  # written by slim_rootfs, not in the package
        (ours / rel).unlink()
    for empty in ("etc/dpkg/dpkg.cfg.d", "etc/dpkg", "etc/apt/apt.conf.d", "etc/apt", "etc"):
        (ours / empty).rmdir()

    assert _tree(ours) == _tree(by_dpkg)
    assert "usr/share/doc/slimcheck/copyright" in _tree(ours)
    assert "usr/lib/locale/C.utf8/LC_CTYPE" in _tree(ours)
    assert {p for p in _tree(ours) if p.startswith(("usr/share/man/", "usr/share/locale/"))} == {
        "usr/share/man/", "usr/share/locale/"}
    assert "usr/share/doc/slimcheck/examples/" in _tree(ours)  # dpkg keeps folders there
    assert removed == 9 * len("x\n")  # the 9 excluded files' bytes (links count nothing)


def test_apt_caches_and_lists_are_emptied_and_the_configs_are_written(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for rel in ("var/cache/apt/archives/libc6_2.36-9_amd64.deb", "var/cache/apt/archives/lock",
                "var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin",
                "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
                "var/lib/apt/lists/lock", "var/lib/apt/extended_states", "var/lib/dpkg/status",
                "etc/apt/sources.list"):
        _write(root, rel)
    (root / "var/cache/apt/archives/partial").mkdir()
    (root / "var/lib/apt/lists/partial").mkdir()

    slim_rootfs(root)

    assert _tree(root / "var/cache/apt") == {"archives/", "archives/partial/"}
    assert _tree(root / "var/lib/apt/lists") == {"partial/"}
    for kept in ("var/lib/apt/extended_states", "var/lib/dpkg/status", "etc/apt/sources.list"):
        assert (root / kept).is_file(), kept
    dpkg_cfg, apt_cfg = root / SLIM_DPKG_FILE, root / SLIM_APT_FILE
    assert "path-include /usr/share/doc/*/copyright" in dpkg_cfg.read_text().splitlines()
    assert 'Acquire::Languages "none";' in apt_cfg.read_text().splitlines()
    assert "rm -f /var/cache/apt/archives/*.deb" in apt_cfg.read_text()
    for path in (dpkg_cfg, apt_cfg):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_apt_reads_the_clean_up_config(tmp_path: Path) -> None:
    """SLIM_APT is valid apt configuration that says what it means: apt-config (apt's own
    parser) reads it from an apt.conf.d of its own (not this machine's) and dumps the
    clean-up hooks, the empty binary caches and no translations."""
    if shutil.which("apt-config") is None:
        pytest.skip("apt-config is needed to parse the apt configuration")
    parts = tmp_path / "apt.conf.d"
    parts.mkdir()
    (parts / Path(SLIM_APT_FILE).name).write_text(base.SLIM_APT)
    main = tmp_path / "apt.conf"
    main.write_text(f'Dir::Etc::main "/dev/null";\nDir::Etc::parts "{parts}/";\n')
    proc = subprocess.run(["apt-config", "dump"], capture_output=True, text=True,
                          env={"APT_CONFIG": str(main), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    clean = f'"{base._CLEAN}";'
    assert [ln for ln in lines if "Post-Invoke::" in ln] == [
        f"APT::Update::Post-Invoke:: {clean}", f"DPkg::Post-Invoke:: {clean}"], lines
    for want in ('Dir::Cache::pkgcache "";', 'Dir::Cache::srcpkgcache "";', 'Acquire::Languages:: "none";'):
        assert want in lines, (want, lines)


def test_the_slim_base_has_a_recipe_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base image built before the slimming (label: the v1 recipe's hash) is rebuilt, and so
    is every image on it (their recipes hold the base's id); any edit of the slimming files
    changes the label again."""
    v1 = recipe_hash(f"debootstrap --variant=minbase {base.SUITE} {base.MIRROR} v1")
    assert base_recipe() != v1
    now = base_recipe()
    monkeypatch.setattr(base, "SLIM_DPKG", base.SLIM_DPKG + "path-exclude /usr/share/common-licenses/*\n")
    assert base_recipe() != now
