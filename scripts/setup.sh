#!/usr/bin/env bash
# Set up a Debian 12 machine for qpod, as root (sudo bash scripts/setup.sh [--test]):
#
#  1. Debian packages: podman and what rootless podman needs (uidmap, fuse-overlayfs, runc:
#     crun fails on cgroups-hybrid hosts), mmdebstrap (builds the Debian 11 image as a normal
#     user) and debootstrap, the C toolchain that builds the preload library and agent
#     (gcc, libc6-dev: the static agent links libc.a), the tools the tests drive.
#  2. qpod itself, for every user: a venv at /opt/qpod made with Debian's own /usr/bin/python3
#     (PEP 668: Debian's python refuses 'pip install' outside a venv), a regular (non-editable)
#     'pip install .' so it works wherever this clone lives and whoever runs it, and
#     /usr/local/bin/qpod and /usr/local/bin/qpod-shell linked to it (on every user's default PATH).
#  3. With --test, also the developer's venv ./.venv: 'pip install -e .[test]' (editable, so the
#     tests run this source tree as it is edited; run them with .venv/bin/python -m pytest).
#
# Safe to run again (it updates both installs); runs are serialised by a lock.
# 'bash scripts/setup.sh --source-hash' prints the fingerprint of the sources the /opt/qpod
# install was made from (kept in /opt/qpod/qpod-source.sha256; the rootless tests compare).
# QPOD_PREFIX and QPOD_BIN_DIR put the install and its two links elsewhere (default /opt/qpod and
# /usr/local/bin): the tests install into a prefix of their own, never over the user's.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${QPOD_PREFIX:-/opt/qpod}
BIN_DIR=${QPOD_BIN_DIR:-/usr/local/bin}
PY=/usr/bin/python3  # Debian's python, whatever python3 comes first on PATH

die() { echo "setup.sh: $*" >&2; exit 1; }

source_hash() {
  # every file the install is built from (python, the C sources, the build hooks), in a fixed order
  find qpod_engine qpod_tui preload -path preload/build -prune -o -type f \
    \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name '*.tcss' -o -name '*.S' \) -print \
    | LC_ALL=C sort | { cat; echo setup.py; echo pyproject.toml; } | xargs sha256sum | sha256sum | cut -d' ' -f1
}

test_venv=0
case "${1-}" in
  --source-hash) source_hash; exit 0 ;;
  --test) test_venv=1 ;;
  "") ;;
  *) echo "usage: sudo bash scripts/setup.sh [--test] | --source-hash" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root: sudo bash scripts/setup.sh (it installs Debian packages and /opt/qpod)"
[ -r /etc/debian_version ] || die "this script sets up Debian (12 or newer); elsewhere see README: install"

mkdir -p /run/lock
exec 9>/run/lock/qpod-setup.lock
flock -w 3600 9 || die "another setup.sh has held /run/lock/qpod-setup.lock for an hour"

t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# a mirror in the middle of a sync fails 'update' for one index now and then: retry, and let
# the install below be the judge of whether what we need is there
for attempt in 1 2 3; do
  apt-get -o DPkg::Lock::Timeout=600 update -q && break
  echo "setup.sh: apt-get update failed (attempt $attempt), retrying" >&2
  sleep 5
done
# podman: runc, conmon, uidmap (newuidmap for rootless), fuse-overlayfs, slirp4netns, CNI plugins;
# mmdebstrap (+ gpg, mount) builds the Debian 11 image as any user, debootstrap as root;
# busybox-static the tiny test image; docker-registry a loopback registry for pull tests;
# gcc/make/libc6-dev/binutils build the preload library and the static agent;
# tmux/zsh/dash/procps drive qpod-shell as a person would; python3-venv/-dev for the venvs.
apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
  podman runc conmon fuse-overlayfs uidmap slirp4netns containernetworking-plugins \
  mmdebstrap gpg mount debootstrap busybox-static docker-registry \
  git gcc make libc6-dev binutils tmux zsh dash procps util-linux passwd openssh-client \
  python3 python3-venv python3-dev ca-certificates
if [ "$test_venv" = 1 ]; then
  # the editors the activation tests drive as a user would (vim's :make and :Termdebug, Emacs'
  # M-x compile and M-x gdb), and fish, the third shell activation hooks
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 vim emacs-nox fish
fi
if [ "$test_venv" = 1 ] && [ ! -x /usr/sbin/sshd ]; then
  # the remote-host tests start their own sshd on 127.0.0.1; the package must not start (and
  # open port 22) on its own: a policy-rc.d says no to service starts while it installs
  no_start=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && no_start=1
  fi
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 openssh-server
  if [ "$no_start" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null; then systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true; fi
  [ -x /usr/sbin/sshd ] || die "openssh-server did not install"
fi
echo "setup.sh: Debian packages ready ($((SECONDS - t0)) s)"

venv() {  # venv DIR: made with Debian's python; remade when it is not (or is broken)
  if ! "$1/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
    rm -rf "$1"
    "$PY" -m venv "$1"
  fi
}

umask 022  # /opt/qpod must be readable by every user
venv "$PREFIX"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check . || die "pip install . into $PREFIX failed (see above)"
source_hash >"$PREFIX/qpod-source.sha256"
# qpod is the native-exec client itself: 'qpod exec' in a warm repository starts no Python; every
# other subcommand (and exec's slow path) runs the CLI with the interpreter linked beside it
lib=$("$PREFIX/bin/python" -I -c 'from qpod_engine.base import paths; print(paths.LIB_DIR)') \
  || die "the qpod package in $PREFIX does not import"
[ -x "$lib/qpod-client" ] || die "$lib/qpod-client was not built (see the pip output above)"
ln -sfn "$PREFIX/bin/python" "$lib/python"
mkdir -p "$BIN_DIR"
ln -sfn "$lib/qpod-client" "$BIN_DIR/qpod"
ln -sfn "$PREFIX/bin/qpod-shell" "$BIN_DIR/qpod-shell"
# containers see this machine's terminals at /dev/pts only when anyone may make a pty there, as
# through /dev/ptmx (the same device: 0666 grants nothing new); Debian mounts it 000 (README,
# Known limits). Now, and at each boot through systemd-tmpfiles.
if [ -c /dev/pts/ptmx ]; then chmod 0666 /dev/pts/ptmx || echo "setup.sh: cannot chmod /dev/pts/ptmx" >&2; fi
mkdir -p /etc/tmpfiles.d
echo 'z /dev/pts/ptmx 0666 - - -' >/etc/tmpfiles.d/qpod-ptmx.conf
# the desktop session of a user who ran 'qpod activate' gets the library through systemd's user
# environment (it prints nothing for anyone else, and nothing once the library is gone)
gen_dir=/usr/local/lib/systemd/user-environment-generators
mkdir -p "$gen_dir"
install -m 0755 "$(dirname "$lib")/activation/environment_generator.sh" "$gen_dir/60-qpod"
echo "setup.sh: qpod installed in $PREFIX, $BIN_DIR/qpod and $BIN_DIR/qpod-shell ($((SECONDS - t0)) s)"

if [ "$test_venv" = 1 ]; then
  venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' \
    || die "pip install -e .[test] into $(pwd)/.venv failed (see above)"
  echo "setup.sh: test venv $(pwd)/.venv (editable: the tests run this tree) ($((SECONDS - t0)) s)"
fi
echo "setup.sh: done in $((SECONDS - t0)) s ($(podman --version), $("$BIN_DIR/qpod" --version), $("$PY" --version))"
