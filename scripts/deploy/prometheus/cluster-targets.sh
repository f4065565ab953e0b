#!/usr/bin/env bash
# Point prometheus.yml (beside this script) at a running `make cluster`: writes
#   targets/cluster.json  every host's 127.0.0.1:<port>, labelled host=hostN, read from the
#                         cluster's haproxy.cfg (the ports are new at each start: run this
#                         again after restarting the cluster; Prometheus re-reads the file)
#   metrics_token         $METRICS_TOKEN (the hosts' token, which make cluster printed), 0600
# Usage: scripts/deploy/prometheus/cluster-targets.sh <the directory make cluster printed
# after "files in">
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files=${1:?usage: $0 <the directory make cluster printed after "files in">}
config=$files/haproxy.cfg
if [ ! -r "$config" ]; then
    echo "$0: no $config: give the directory make cluster printed after \"files in\"" >&2
    exit 2
fi

mkdir -p "$here/targets"
# Written aside, then renamed: Prometheus watches the directory and must never read half.
awk 'BEGIN { print "[" }
     $1 == "server" { printf "%s  {\"targets\": [\"%s\"], \"labels\": {\"host\": \"%s\"}}", sep, $3, $2; sep = ",\n" }
     END { if (!sep) exit 1; print "\n]" }' "$config" >"$here/targets/.cluster.json.new" || {
    rm -f "$here/targets/.cluster.json.new"
    echo "$0: no server lines in $config" >&2
    exit 1
}
mv "$here/targets/.cluster.json.new" "$here/targets/cluster.json"
echo "wrote $here/targets/cluster.json: $(grep -c '"targets"' "$here/targets/cluster.json") hosts"

if [ -n "${METRICS_TOKEN:-}" ]; then
    (umask 077 && printf '%s' "$METRICS_TOKEN" >"$here/metrics_token.new")
    mv "$here/metrics_token.new" "$here/metrics_token"
    echo "wrote $here/metrics_token"
elif [ ! -s "$here/metrics_token" ]; then
    echo "$0: METRICS_TOKEN is not set and $here/metrics_token is missing: export the token" \
        "make cluster printed, and run this again" >&2
    exit 1
fi
