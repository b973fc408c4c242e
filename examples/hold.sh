#!/usr/bin/env bash
# Runs a nightly job once a day on one host of many: every host runs this
# script from cron at the same time, `leaseagent hold` lets one host at a
# time run it, and the first one runs the job while the others wait for the
# lease; each of them then gets the lease in turn and finds nothing to do.
#
# The lease alone does not make the job run once: hold releases it when the
# job exits, and the next host waiting for it then runs its command. What
# makes the others find nothing to do is a record of the day the job last
# ran, kept where every host reads it: the file NIGHTLY_JOB_STAMP, on
# storage all the hosts share (an NFS mount, say). A file local to each host
# (/var/tmp) would let each host run the job in turn. A job that writes to a
# database can keep that record in the database instead, in the same
# transaction as its work.
#
#   NIGHTLY_JOB_STAMP=/shared/cron/nightly-job.done \
#   LEASEAGENT_NATS_URL=nats://leases.internal:4222 ./examples/hold.sh
#
# The day is the UTC date on the host that runs the job: run it from cron
# well away from midnight UTC, so that hosts whose clocks differ a little
# agree on it.
#
# While the job runs its lease is renewed every 20s; if the agent cannot be
# reached the job gets SIGTERM 12s before the 60s lease could pass to another
# host (and SIGKILL 6s later), and it has not recorded the day, so the next
# host runs it again. hold exits with the job's status.
set -euo pipefail

stamp=${NIGHTLY_JOB_STAMP:?set NIGHTLY_JOB_STAMP to a file on storage every host shares (see the top of $0)}
today=$(date -u +%F)

exec leaseagent hold cron nightly-job "$(hostname)" 60s -- \
	bash -c '
		set -euo pipefail
		if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then
			echo "nightly job already ran today"
			exit 0
		fi
		echo "running the nightly job on $(hostname)"
		# ... the real work goes here ...
		# Record the day only once the work is done, all at once (rename
		# is atomic), so a host that reads it never sees half a date.
		echo "$2" >"$1.tmp.$$"
		mv "$1.tmp.$$" "$1"
	' nightly-job "$stamp" "$today"
