#!/usr/bin/env bash
# `make image`: build ticketboss:latest from scripts/image/Containerfile with buildah, then
# print its size.
#
#   BASE    the base of both stages (default python:3.11-slim). The default is pulled when
#           it is not in the local store; when it cannot be pulled (no route to Docker Hub),
#           localhost/ticketboss-base:bookworm is used instead, built by base.sh if missing.
#   IMAGE   the tag to build (default ticketboss:latest)
#   PIP_CERT  a CA bundle for pip, for a TLS-intercepting proxy: passed to the build stage as
#           a secret, never left in a layer
set -euo pipefail
cd "$(dirname "$0")/../.."

default_base=docker.io/library/python:3.11-slim
fallback_base=localhost/ticketboss-base:bookworm
base=${BASE:-$default_base}
image=${IMAGE:-ticketboss:latest}

have() { buildah inspect --type image "$1" >/dev/null 2>&1; }

case $base in
  python:3.11-slim | docker.io/library/python:3.11-slim)
    base=$default_base
    if ! have "$base" && ! error=$(timeout 300 buildah pull --quiet "$base" 2>&1 >/dev/null); then
      echo "build.sh: cannot pull $base (${error##*: }); using $fallback_base" >&2
      base=$fallback_base
      have "$base" || scripts/image/base.sh "$base"
    fi
    ;;
  "$fallback_base")
    have "$base" || scripts/image/base.sh "$base"
    ;;
esac

secret=()
if [[ -n ${PIP_CERT:-} && -f $PIP_CERT ]]; then
  secret=(--secret "id=pip-cert,src=$PIP_CERT")
fi

start=$(date +%s)
# --format docker: the OCI image format has no HEALTHCHECK (buildah would drop it).
buildah bud --isolation chroot --layers --force-rm --format docker \
  --ignorefile scripts/image/Containerfile.dockerignore \
  "${secret[@]}" \
  --build-arg "BASE=$base" \
  -f scripts/image/Containerfile -t "$image" .
echo "built $image from $base in $(($(date +%s) - start)) s"
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
