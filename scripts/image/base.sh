#!/usr/bin/env bash
# A base image built from Debian's packages, for where base images cannot be pulled: Debian
# bookworm's python3 (3.11) with venv and CA certificates, as localhost/ticketboss-base:bookworm
# (or the name given). scripts/image/Containerfile works on it as on python:3.11-slim: both
# have python3 on PATH and `python3 -m venv`, and the Containerfile does the rest in a venv.
#
#   scripts/image/base.sh [IMAGE]    DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR: other mirrors
set -euo pipefail

image=${1:-localhost/ticketboss-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

work=$(mktemp -d)
container=
cleanup() {
  [[ -z $container ]] || buildah rm "$container" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --variant=apt: the Essential packages and apt. The merged-usr hook lays /usr out merged
# itself and installs usr-is-merged, as Debian's own images are: without it apt picks the
# usrmerge package, which brings Perl (46 MB).
# The path-excludes (documentation, manuals, translations) are written into the image's
# dpkg configuration too, so packages a derived image installs leave them out as well; the
# copyright files stay. Check-Valid-Until: a mirror may serve a dated snapshot.
mmdebstrap --variant=apt \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"

container=$(buildah from scratch)
buildah add --quiet "$container" "$work/rootfs.tar" /
# What python:3.11-slim sets that a program may notice: UTF-8 by default, python3 as the
# default command.
buildah config \
  --env LANG=C.UTF-8 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd python3 \
  --label org.opencontainers.image.title=ticketboss-base \
  --label org.opencontainers.image.description="Debian bookworm: python3, python3-venv, ca-certificates (mmdebstrap)" \
  --created-by "scripts/image/base.sh" \
  "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null
container=
echo "$image: Debian bookworm, $(buildah images --format '{{.Size}}' "$image")"
