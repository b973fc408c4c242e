#!/usr/bin/env bash
# install-peers.sh installs the lease services the suite compares against
# (etcd and Redis) from Debian's packages, and stops the system services the
# packages start: the benchmark runs its own processes, on its own ports and
# data directories, and stops them when done. Run as root. Not part of CI.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-peers.sh: run as root (apt-get install)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends etcd-server redis-server

# The packages may start their own daemons (on 2379 and 6379); the bench
# does not use them, and they would take CPU from what it measures.
for svc in etcd redis-server; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		systemctl stop "$svc" || true
	elif command -v service >/dev/null 2>&1; then
		service "$svc" stop >/dev/null 2>&1 || true
	fi
done

echo "etcd:  $(etcd --version 2>/dev/null | head -1)"
echo "redis: $(redis-server --version)"
