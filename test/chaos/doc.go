// Package chaos runs leaseagent under faults and checks the history of what
// its clients saw against the product's promises, the way Jepsen and etcd's
// robustness tests do.
//
// A run (Run) starts clients, each a goroutine with its own NATS connection
// through a TCP Proxy to a real `leaseagent` process (Agent), doing random
// claims, extensions, checks with a *natskv.Fence, releases and waits, while
// a fault loop kills (-9) and restarts the agent, pauses it (SIGSTOP) for
// longer than a lease lasts, and cuts or delays the clients' connections.
// Or the same clients run against a Cluster of three clustered `leaseagent`
// processes, each its own NATS node, connecting to the nodes directly,
// while the fault loop kills (-9) the namespace's owner, the bucket's
// stream leader or any node, or pauses the owner for longer than its
// ownership lasts.
// A Recorder keeps every operation with its real-time start and end on this
// process's monotonic clock, its result and its fencing token. Check then
// looks for the slices of history that break an invariant.
//
// # What Check proves
//
// All times are readings of this machine's monotonic clock, which the agent
// (another process on the same machine) also decides expiries on, so no
// slack is allowed. A successful claim of lease L by holder A that started
// at s with duration d guarantees A the lease until s+d, or until the start
// of A's next release of L that did not answer "not held", whichever is
// first: that is A's guaranteed window. Check reports:
//
//  1. Overlap: another holder B's claim of L succeeded, ending before A's
//     window ended, although B's tenure began after A's (B's fencing token is
//     greater, or B's claim started after A's ended) and B's claim ended no
//     earlier than A's started. B was granted the lease inside A's guarantee.
//  2. Fencing: two different holders were seen with the same token for L, or
//     an operation that started after another ended saw a smaller token.
//  3. Stale check: a Check said "held" for H after another holder's claim of
//     L had succeeded, and either that claim's token is greater than the one
//     the Check returned, or the Check ended inside that claim's window.
//  4. Waits: a WaitUntilExpired returned nil although one holder's window
//     covered the whole call (from a claim that ended before the wait
//     began); or a wait was still running longer than Config.WaitBound
//     (plus the length of the faults around, and how long each lingers)
//     after the lease became known to be free and while it stayed free.
//  5. Lost claim: an operation by A that found A not holding L (a check or
//     release answering "not held", a claim denied) began after A's
//     successful claim ended and ended inside its window. Runs end by
//     claiming every lease for long, killing the agent, restarting it and
//     checking, so this also checks that acknowledged claims survive a crash.
//
// # What it cannot prove
//
//   - It sees only what clients saw. An operation that failed (timeout,
//     agent unavailable) has an unknown outcome: a failed claim is taken to
//     have maybe succeeded where that is the cautious reading (it ends a
//     free interval) and is otherwise ignored; a failed release may have
//     ended its holder's window at its start. Even a denied claim may have
//     succeeded in an attempt whose reply was lost before a retry was
//     denied, so any claim ends a free interval.
//   - It assumes an operation takes effect between its call's start and end,
//     even when the call failed. Run keeps that true: clients have nats.go's
//     reconnect buffer off (a request is sent now or never), and pauses and
//     delays are far shorter than the request timeout.
//   - The lease is known to be free only after a successful release, until
//     the next claim that may have succeeded; expiries are not inferred (the
//     agent may keep a lease longer than its guarantee, by design, after it
//     restarts). So the wait bound is checked only after releases.
//   - Fencing tokens are known only for claims followed by a successful
//     check; invariant 1 falls back to real-time order without them.
//   - Ordering tenures by token assumes invariant 2 holds; a broken token
//     order is reported as invariant 2 as well.
//   - A run that finds nothing is evidence, not proof: the faults are random
//     and the timing of every run differs, even with the same seed.
package chaos
