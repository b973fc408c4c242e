// Package actors is the lease manager: Proto.Actor actors that own the
// leases of a NATS JetStream KV bucket, one actor per namespace.
//
// A Manager starts a manager actor, which starts the actor of a namespace
// the first time a request names it and supervises it. The namespace actor
// owns that namespace's natskv.Client; nothing else touches it. It decides
// claims from the Client's cache, writes through it, keeps time, expires
// leases, wakes waiters and publishes events. (*Manager).Namespace returns a
// handle that implements lease.Claimer and lease.Checker, with
// context-taking twins of each call, a listing (whole, or a page at a time
// in name order) and a release.
//
// Claims, releases and checks also come in a form for callers that must
// not wait (ClaimFunc, ReleaseFunc, Token.CheckFunc): the call returns at
// once and its answer function is called once, from the namespace actor's
// goroutine when the outcome is known, so a service can reply to its own
// caller from there with no goroutine parked per request. Instead of a
// context such a call takes a deadline: past it (checked every 100ms) the
// answer is context.DeadlineExceeded, and Stop answers ErrStopped, as their
// context twins would return.
//
// # Decisions
//
//   - Claim: a free lease is claimed; the holder's own lease is extended
//     (in memory if the stored record's duration covers the extension, see
//     Extensions below); another holder's lease is denied (ErrClaimDenied,
//     nothing written),
//     unless its expiry has passed, in which case it is expired and then
//     claimed in the same call. A write that loses a race in the store is
//     decided again from the store's latest state, up to ClaimRetries times.
//   - Check: answered from the actor's state; on a miss (not held, or held
//     by someone else) the actor reads what changed in the namespace since
//     it last read it, once, and answers from that. A lease past its expiry is not held, even
//     before it has been removed.
//   - WaitUntilExpired: returns at once if the lease is not held, otherwise
//     when it expires or is released.
//   - Release: the holder gives the lease up now; others get ErrNotHeld.
//
// # Time
//
// Expiry follows natskv's clock rule on the Config's Clock: a lease this
// Manager wrote expires its duration after the write started; one written by
// anyone else expires its duration (plus Config.ClockDriftRate of it) after
// this Manager first saw it. Each namespace keeps one timer, set just after
// its earliest expiry and never further than MaxSleep away. When it fires, the due leases are expired in
// name order (a lost race means someone else changed the lease, and is
// skipped): one after another, or with group commit (MinBatch) all at
// once, in rounds applied in order, so that they share batches. If one lost
// a race, the actor then reads what changed in the namespace (the writes
// since its last read, not every lease); if none did, every write was its
// own and there is nothing to read. The whole namespace is read when the
// actor starts and at least every MaxSleep, which also catches what no
// write of the actor's ran into (a stream purged by an operator).
//
// # Extensions
//
// An extension for no longer than the duration in the lease's stored
// record (the usual renewal, same duration each time) is not written: the
// actor moves the expiry in its cache and answers at once, at about the
// cost of a check. A longer one is written, with the longer duration. An
// acknowledged extension still binds after a crash: the next actor to
// serve the namespace, in this process or another, loads it and gives
// every held lease its record's whole duration from the load
// (natskv.Client.PrepareLocalExtend has the argument). So after a restart
// or a takeover, a lease whose holder has died expires up to one duration
// after the load, not after its last extension. The first extension of a
// lease after a takeover (or after a write to it whose outcome was lost)
// is written all the same: it moves the revision, so that a write the
// previous owner still had in flight fails instead of landing on a record
// the new owner has promised time on. An extension the record
// covers cannot notice that the record was deleted behind the Manager's
// back (only an operator could); the next reload does.
//
// # Events
//
// When a lease expires or is released, messages.ExpiredEvent is published
// on <prefix>.expired.<namespace>.<lease>; when a lease gets a new holder,
// messages.ClaimedEvent on <prefix>.claimed.<namespace>.<lease>. Names are
// escaped as natskv.EscapeName does. Events are published with core NATS:
// at most once, and lost if nobody is subscribed or the connection drops.
// With Config.Interest set (leaseagent sets it for its embedded server),
// an event nobody is subscribed to is not even sent. Use events to wake up
// early, not as the only source of truth.
//
// # Concurrency
//
// Receive never blocks. Store writes run on other goroutines (long-lived
// workers, which keep the stacks they grew) and come back to the actor as
// messages, so writes for different leases are in
// flight together; writes for one lease run one at a time, in order of
// arrival. A slow write for one lease delays only requests for that lease.
//
// With Config.MinBatch set (group commit, for servers that fsync every
// write), a namespace keeps one round of writes in flight: a write decided
// while nothing is in flight goes out alone at once, and the writes decided
// meanwhile go out together when the round lands, as one JetStream atomic
// batch if there are at least MinBatch of them. A batch is all or nothing;
// when the server refuses one because a key moved, only the writes whose
// key moved fail (as a lost race does) and the rest are sent again.
//
// # Failures
//
// If a namespace actor panics it is restarted with the store (and the
// observation times in its cache) it had; it reloads the namespace. The
// request that crashed it, and every other request it was serving, fail at
// once with ErrUnavailable. More than ten panics in a minute stop the actor;
// the next request for the namespace starts a new one. Stop fails pending
// calls with ErrStopped.
//
// # Policy
//
// Config.Policy (package policy) narrows what each namespace accepts: claim
// durations, lease and holder name patterns, and whether undeclared
// namespaces may be used. Every call is checked against it before anything is
// sent to a namespace's actor; a call that breaks it fails with an error
// wrapping ErrInvalidArgument that names the rule, and changes nothing (a
// refused namespace does not even get an actor).
//
// # Memory
//
// A namespace's actor and cache live while it has held leases, waiters or
// requests; IdleTimeout after the last request with none of those, the
// actor stops and the next request starts it again from the store. At most
// MaxNamespaces are served at once; requests for more fail with
// ErrUnavailable, so requests naming ever new namespaces cannot exhaust
// memory.
//
// # Limits
//
// A Manager assumes it is the only lease manager writing its namespaces.
// Another writer's claims are seen only on a reload, so a Check may miss
// them until then; and another writer does not see extensions kept in
// memory, so it could expire a lease early by its own clock. Sharing
// namespaces between agents safely is the job of namespace ownership, a
// layer above this one: one owner at a time, each loading a namespace
// afresh when it takes it over, and SetWriteGuard to stop an owner's
// writes the moment its tenure ends.
package actors
