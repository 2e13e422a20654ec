#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for qpod (run as root): podman and what it needs here,
# debootstrap for the local Debian 11 image, the terminal tools the end-to-end tests drive,
# and the qpod package itself (which also builds the preload library).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi
# a mirror in the middle of a sync fails 'update' for one index now and then: retry, and let
# the install below be the judge of whether what we need is there
for attempt in 1 2 3; do
  apt-get update -q && break
  echo "setup.sh: apt-get update failed (attempt $attempt), retrying" >&2
  sleep 5
done
# podman runtime: runc (crun fails on cgroups-hybrid hosts); uidmap/slirp4netns for rootless;
# debootstrap builds the Debian 11 image; busybox-static the tiny test image; docker-registry a
# loopback registry for pull tests; tmux/zsh/dash drive qpod-shell as a person would.
apt-get install -y -q --no-install-recommends \
  podman runc conmon fuse-overlayfs uidmap slirp4netns containernetworking-plugins \
  debootstrap busybox-static docker-registry \
  git gcc make libc6-dev binutils tmux zsh dash procps python3-venv ca-certificates

python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install -q -e '.[test]'
echo "setup.sh: done ($(podman --version), qpod $(python3 -c 'import qpod_engine; print(qpod_engine.__version__)'))"
