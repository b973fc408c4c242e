// Package natskv stores leases in a NATS JetStream key-value bucket.
//
// A Bucket is one KV bucket, shared by many namespaces. A Client is a
// lease.Client for one namespace of a Bucket: a cache of that namespace's
// leases, changed only by the Client's own writes and by Refresh.
//
// # Keys
//
// A lease is stored under the key "<namespace>.<lease>", each part escaped by
// EscapeName: names made of ASCII letters, digits, '-' and '_' appear as they
// are, any other byte as '=' and two hex digits. The value is a
// messages.LeaseRecord: holder, duration, and, for people reading the bucket,
// the writer's id and wall-clock start (of the last write: renewals kept in
// memory, below, do not change the record). Readers ignore fields they do
// not know, as protobuf does: a later version may add fields for people
// reading the bucket, but none that changes who holds a lease or for how
// long, which older Clients would not see. A record that cannot be read
// is left out of the cache and named in Refresh's error (see
// Client.RefreshContext).
//
// # Guarantees
//
// Every write is revision-checked. A claim is a create-if-absent, an
// extension an update at the revision the Client last saw, an expiry a delete
// at that revision. A write that loses a race to another writer is never an
// overwrite: it fails with an error wrapping lease.ErrInvalid, after the
// Client has read the lease's latest state from the stream leader. Error
// 10164, which a replicated bucket can report while an earlier write to the
// key is still in flight, is retried a bounded number of times.
//
// Expiry uses only the Client's own clock (the Clock in Config, monotonic):
//   - a lease this Client claimed or extended expires its duration after
//     the write started;
//   - a record written by anyone else (another Client, another process, an
//     earlier run of this one) expires its duration after this Client first
//     observed that revision, plus ClockDriftRate of the duration.
//
// Other machines' wall clocks are never consulted, so clocks may disagree by
// any amount; only their rates are assumed to be close. A new observation
// only ever pushes an expiry later than the writer's own, so a lease is never
// expired early by a reader.
//
// ExpireLease succeeds only once the Client's clock is strictly past the
// expiry, and only if the lease has not changed since.
//
// # Outcomes
//
// A write's outcome is applied to the cache once it comes back (Apply). An
// outcome that comes back after the cache has read a later state of the
// key (say, the actor that sent it crashed, and its successor reloaded and
// wrote on) changes nothing and fails with lease.ErrInvalid. A write whose
// outcome is lost (a timeout) may have landed or not: the cache keeps what
// it knew, but no extension of that record is then answered without a
// write (below), so the next one finds out.
//
// # Extensions without a write
//
// An extension is answered without a write only against a record this
// Client wrote itself and knows to have landed, whose expiry counts from
// that write's start: no other process can have observed the record
// earlier and so expire it sooner. An extension of a record the Client
// only observed (written by another process, or by an earlier run of this
// one) is always written, even one that would not move the expiry later:
// the new revision fences off a late write of the previous writer (an
// agent that owned the namespace before), which may have observed the
// record earlier than this Client did.
//
// Of a record it wrote, the lease.Client methods skip an extension that
// would not move the expiry later, and write every other. PrepareLocalExtend,
// for a Client that is the only writer of its namespace (the lease manager
// of package actors is), writes only an extension longer than the stored
// record's duration; a shorter or equal one moves the expiry in the cache
// alone. That loses nothing a holder was promised, provided whoever writes
// the namespace next loads it afresh first: the clock rule then gives
// every held lease its record's whole duration from the load, and the load
// comes after every extension acknowledged before it (etcd does the same
// with lease keep-alives). The price is that the bucket shows holders, not
// their latest expiries: a process that observed a record long ago would
// take the lease for expired early, so it must not write the namespace.
//
// # Fencing
//
// The KV revision of the record that made a holder the holder is the fencing
// token of its tenure; extensions carry it forward in the record, so it stays
// the same while the holder keeps the lease. Revisions are stream sequence
// numbers, so tokens strictly increase across holder changes of a lease, for
// as long as the bucket lives: a bucket deleted and created again starts
// its sequence numbers, and so its tokens, from 1, and a resource that
// remembers tokens must then be told to forget them. Pass a *Fence to
// Info.Trapdoor to receive it, or call Client.Fence.
//
// # Reads
//
// Refresh loads a namespace with one watch over its keys. Single-key reads,
// made after a lost race, go to the stream leader: OpenBucket turns off
// direct get on the bucket's stream, because followers of a replicated
// stream answer direct gets from state that may be stale. A watch's
// consumer may be placed on such a follower too, so every load first asks
// the leader for the namespace's latest revision and is read again (a few
// times, then fails) until it reaches it.
//
// # Listing
//
// LeasesAfter lists the held leases in order of their names' bytes, from
// any point in that order. Its first call builds an index of the names (a
// B-tree), which the Client then keeps in step with every write, outcome
// and load: from then on a page of a namespace costs as much as the page,
// not as the namespace, where Leases copies the whole of it. A namespace
// never listed does not pay for keeping the index.
//
// # Limits
//
// A Client is not safe for concurrent use; a lease manager owns it and calls
// it from one goroutine. Write.Run and Client.Load are the exceptions, so
// that a manager can keep many writes in flight (see Write). The server-side
// TTL of KV keys is not used: expiry is decided here, to the nanosecond, on
// the Client's clock.
//
// A release or an expiry leaves a delete marker under the lease's key, so
// that a reader of changes sees the lease go, and so that the next claim
// knows the revision to write at. The marker carries a per-message TTL
// (BucketConfig.DeleteMarkerTTL, two minutes by default); the server then
// removes it, and nothing of the lease is left in the bucket. Leases named
// once and never again (a lock per job, say) therefore cost nothing once
// their markers have gone: without this every name ever used would keep a
// key in the stream and in the server's memory, and an entry in the cache
// of each Client. A Client forgets markers the server has removed at its
// next full load; a claim that expects a marker already gone loses a race
// (ErrInvalid), reads that the key is empty and can claim at once. The
// TTL needs nats-server 2.11 or later; on an older server markers stay.
package natskv
