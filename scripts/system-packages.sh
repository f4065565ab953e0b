#!/usr/bin/env bash
# Debian packages the tests and `make cluster` run for real (make install calls this):
# pgbouncer (a transaction-mode pooler), HAProxy (the cluster's balancer), and Patroni with
# etcd (the three-node PostgreSQL of `make cluster ARGS=--ha`), promtool (Prometheus: the
# alert rules' tests), buildah and mmdebstrap (`make image`). Installs only what is missing,
# as root.
set -euo pipefail

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v patroni >/dev/null 2>&1 || [ -x /usr/bin/patroni ] || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ] || missing+=(prometheus)
command -v buildah >/dev/null 2>&1 || [ -x /usr/bin/buildah ] || missing+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || [ -x /usr/bin/mmdebstrap ] || missing+=(mmdebstrap)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Only the binary is wanted: keep the package's own service from starting (unless the
# machine already has a policy of its own, which is left as it is).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
  || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
