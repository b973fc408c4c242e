#!/usr/bin/env bash
# Runs a nightly job on exactly one host of many: every host runs this script
# from cron at the same time, and `leaseagent hold` lets one of them run the
# job while the others wait for the lease and then find nothing to do.
#
#   LEASEAGENT_NATS_URL=nats://leases.internal:4222 ./examples/hold.sh
#
# While the job runs its lease is renewed every 20s; if the agent cannot be
# reached the job gets SIGTERM 12s before the 60s lease could pass to another
# host. hold exits with the job's status.
set -euo pipefail

stamp=/var/tmp/nightly-job.done
today=$(date +%F)

exec leaseagent hold cron nightly-job "$(hostname)" 60s -- \
	bash -c '
		if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then
			echo "nightly job already ran today"
			exit 0
		fi
		echo "running the nightly job on $(hostname)"
		# ... the real work goes here ...
		echo "$2" >"$1"
	' nightly-job "$stamp" "$today"
