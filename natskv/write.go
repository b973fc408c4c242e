package natskv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leaseagent/lease"
)

type writeKind int

const (
	claimWrite writeKind = iota
	extendWrite
	expireWrite
	releaseWrite
)

func (k writeKind) String() string {
	switch k {
	case claimWrite:
		return "claim"
	case extendWrite:
		return "extend"
	case expireWrite:
		return "expire"
	default:
		return "release"
	}
}

// Write is one revision-checked write, prepared by a Client from its cache.
// It splits an operation in three so that a caller can keep writes for many
// leases in flight at once: Prepare* on the Client's goroutine, Run on any
// goroutine, Apply back on the Client's goroutine. Writes for the same lease
// must be applied in the order they were prepared, one at a time: a Write
// prepared while another for the same lease is in flight expects a revision
// that the first will change.
type Write struct {
	bucket   *Bucket
	kind     writeKind
	lease    string
	key      string
	expect   uint64
	fence    uint64 // token of the tenure extended or ended; 0 for a claim
	data     []byte
	holder   string
	duration time.Duration
	start    time.Time // the Client's clock when the write was prepared
	noop     bool
	local    bool // an extension the record covers: kept in the cache only

	// Set by Run.
	ran      bool
	revision uint64
	err      error
	latest   *entry // the key's state after a lost race, if it could be read
	readErr  error
}

// Lease returns the name of the lease the write is for.
func (w *Write) Lease() string { return w.lease }

// Holder returns the holder the write records, or, for a delete, the holder
// whose record it removes.
func (w *Write) Holder() string { return w.holder }

// Revision returns the revision the write created (for a delete, that of the
// delete marker), once Apply has returned nil.
func (w *Write) Revision() uint64 { return w.revision }

// Claims reports whether the write gives the lease a new holder (a claim,
// not an extension).
func (w *Write) Claims() bool { return w.kind == claimWrite }

// Deletes reports whether the write removes the lease (an expiry or a
// release).
func (w *Write) Deletes() bool { return w.kind == expireWrite || w.kind == releaseWrite }

// Fence returns the fencing token of the tenure the write is about: for a
// claim, the revision it created (once applied); otherwise the token of the
// tenure it extends or ends.
func (w *Write) Fence() uint64 {
	if w.kind == claimWrite {
		return w.revision
	}
	return w.fence
}

// NoOp reports whether the write has nothing to do: an extension that would
// not move the expiry later.
func (w *Write) NoOp() bool { return w.noop }

// Local reports whether the write stays in the Client's cache: an extension
// from PrepareLocalExtend that the stored record already covers. Run does
// no I/O for it, and Apply moves the cached expiry.
func (w *Write) Local() bool { return w.local }

// PrepareClaim prepares the write that makes request.Holder the holder of a
// lease that is not held. It returns ErrInvalid if the cache says the lease
// is held, and an error naming the problem for invalid arguments.
func (c *Client) PrepareClaim(name string, request lease.Request) (*Write, error) {
	if err := c.checkArgs(name, &request); err != nil {
		return nil, err
	}
	s := c.known[name]
	if s != nil && s.held {
		return nil, fmt.Errorf("%w: claim %q: held by %q", lease.ErrInvalid, name, s.holder)
	}
	var expect uint64
	if s != nil {
		expect = s.revision // the delete marker left by the last holder
	}
	return c.prepareRecord(claimWrite, name, request, expect, 0)
}

// PrepareExtend prepares the write that extends a lease held by
// request.Holder to request.Duration from now. If the Client wrote the
// lease's record itself and the extension would not move the expiry later,
// the Write is a no-op that succeeds (see "Extensions without a write" in
// the package doc). It returns ErrInvalid if the cache says request.Holder
// does not hold the lease.
func (c *Client) PrepareExtend(name string, request lease.Request) (*Write, error) {
	w, err := c.PrepareRenew(name, request)
	if err != nil {
		return nil, err
	}
	s := c.known[name]
	switch {
	case w.start.Add(request.Duration).After(s.expiry):
		return w, nil
	case s.written:
		w.noop = true
		return w, nil
	}
	// A record the Client only observed: written all the same, for no
	// less time than the lease already has.
	keep := lease.Request{Holder: request.Holder, Duration: s.expiry.Sub(w.start)}
	return c.prepareRecord(extendWrite, name, keep, s.revision, s.fence)
}

// PrepareLocalExtend is PrepareExtend for a Client that is the only writer
// of its namespace: an extension of a record the Client wrote, for at most
// the record's duration, is kept in the cache (a Local Write), and any
// other is written.
//
// That is safe only where every other process that could write the
// namespace must first load it afresh, as an agent taking a namespace over
// does: the clock rule then gives each held lease its record's full
// duration from the load, which comes after any extension acknowledged
// before it, so the holder keeps at least what it was promised through a
// crash of this process. The stored record then shows the holder, not the
// latest expiry: a reader that observed the record long ago (and did not
// load it afresh) would think the lease expired early, so such readers
// must not write.
func (c *Client) PrepareLocalExtend(name string, request lease.Request) (*Write, error) {
	if err := c.checkArgs(name, &request); err != nil {
		return nil, err
	}
	s := c.known[name]
	if s == nil || !s.held || s.holder != request.Holder || !s.written || request.Duration > s.duration {
		return c.PrepareExtend(name, request)
	}
	now := c.clock.Now()
	return &Write{
		bucket: c.bucket, kind: extendWrite, lease: name, key: s.key,
		expect: s.revision, fence: s.fence, holder: s.holder, duration: request.Duration, start: now,
		local: true, noop: !now.Add(request.Duration).After(s.expiry),
	}, nil
}

// PrepareRenew is PrepareExtend without the no-op: the Write always writes,
// at the cached revision, so it always makes a new revision. Use it when the
// new revision is the point: another process that watches a lease restarts
// its expiry clock only when it sees the revision change (the clock rule),
// so a holder proving it is alive must write, even if its own expiry would
// not move.
func (c *Client) PrepareRenew(name string, request lease.Request) (*Write, error) {
	if err := c.checkArgs(name, &request); err != nil {
		return nil, err
	}
	s := c.known[name]
	switch {
	case s == nil || !s.held:
		return nil, fmt.Errorf("%w: extend %q: not held", lease.ErrInvalid, name)
	case s.holder != request.Holder:
		return nil, fmt.Errorf("%w: extend %q: held by %q, not %q", lease.ErrInvalid, name, s.holder, request.Holder)
	}
	return c.prepareRecord(extendWrite, name, request, s.revision, s.fence)
}

// PrepareExpire prepares the delete of a lease whose expiry has passed on the
// Client's clock. It returns ErrInvalid if the cache says the lease is not
// held or has not expired.
func (c *Client) PrepareExpire(name string) (*Write, error) {
	if err := CheckName("lease", name); err != nil {
		return nil, err
	}
	s := c.known[name]
	if s == nil || !s.held {
		return nil, fmt.Errorf("%w: expire %q: not held", lease.ErrInvalid, name)
	}
	now := c.clock.Now()
	if !now.After(s.expiry) {
		return nil, fmt.Errorf("%w: expire %q: not expired for another %v", lease.ErrInvalid, name, s.expiry.Sub(now))
	}
	return &Write{
		bucket: c.bucket, kind: expireWrite, lease: name, key: s.key,
		expect: s.revision, fence: s.fence, holder: s.holder, start: now,
	}, nil
}

// PrepareRelease prepares the delete of a lease that holder holds, before its
// expiry: the holder gives the lease up. It returns ErrInvalid if the cache
// says holder does not hold the lease.
func (c *Client) PrepareRelease(name, holder string) (*Write, error) {
	if err := CheckName("lease", name); err != nil {
		return nil, err
	}
	if err := CheckName("holder", holder); err != nil {
		return nil, err
	}
	s := c.known[name]
	switch {
	case s == nil || !s.held:
		return nil, fmt.Errorf("%w: release %q: not held", lease.ErrInvalid, name)
	case s.holder != holder:
		return nil, fmt.Errorf("%w: release %q: held by %q, not %q", lease.ErrInvalid, name, s.holder, holder)
	}
	return &Write{
		bucket: c.bucket, kind: releaseWrite, lease: name, key: s.key,
		expect: s.revision, fence: s.fence, holder: s.holder, start: c.clock.Now(),
	}, nil
}

func (c *Client) checkArgs(name string, request *lease.Request) error {
	if err := CheckName("lease", name); err != nil {
		return err
	}
	if err := request.Validate(); err != nil {
		return err
	}
	return CheckName("holder", request.Holder)
}

func (c *Client) prepareRecord(kind writeKind, name string, r lease.Request, expect, fence uint64) (*Write, error) {
	start := c.clock.Now()
	data, err := c.encodeRecord(name, r, fence, time.Now())
	if err != nil {
		return nil, fmt.Errorf("natskv: %s %q: encode record: %w", kind, name, err)
	}
	return &Write{
		bucket: c.bucket, kind: kind, lease: name, key: c.prefix + EscapeName(name),
		expect: expect, fence: fence, data: data, holder: r.Holder, duration: r.Duration, start: start,
	}, nil
}

// Run performs the write. If it loses a race, it reads the key's latest
// state for Apply to install. Run may be called on any goroutine, once.
func (w *Write) Run(ctx context.Context) {
	if w.ran {
		return
	}
	w.ran = true
	if w.noop || w.local {
		return
	}
	w.runAlone(ctx)
}

// runAlone publishes the write on its own and records the outcome as Run
// does.
func (w *Write) runAlone(ctx context.Context) {
	w.revision, w.err = w.bucket.write(ctx, w.key, w.data, w.Deletes(), w.expect)
	if errors.Is(w.err, errConflict) {
		e, err := w.bucket.latest(ctx, w.key)
		w.lost(e, err)
	}
}

// lost records that the write lost a race, and the key's latest state as
// read after it (or the error reading it).
func (w *Write) lost(e entry, readErr error) {
	w.revision, w.err, w.readErr, w.latest = 0, errConflict, readErr, nil
	if readErr == nil {
		w.latest = &e
		// Observed now: not earlier than the write that beat us.
	}
}

// Apply records the outcome of a Write that has run and returns it: nil on
// success, an error wrapping ErrInvalid if another writer got there first (the
// cache then holds the key's state as Run read it after losing, unless the
// cache has read a later one since), or the store's error. A write that lost
// to a record that cannot be read fails with an error naming the record,
// not ErrInvalid: the cache cannot be brought up to date.
func (c *Client) Apply(w *Write) error {
	if !w.ran {
		return fmt.Errorf("natskv: %s %q: write applied before it ran", w.kind, w.lease)
	}
	if w.noop {
		return nil
	}
	switch {
	case errors.Is(w.err, errConflict):
		if w.readErr != nil {
			return fmt.Errorf("natskv: %s %q: %w (and reading the latest failed: %v)", w.kind, w.lease, w.err, w.readErr)
		}
		if c.readSinceLost(w.lease, *w.latest) {
			// The cache has read past what Run read after losing: keep it.
			return fmt.Errorf("natskv: %s %q: %w", w.kind, w.lease, w.err)
		}
		if err := c.observe(w.lease, *w.latest, c.clock.Now()); err != nil {
			// Not ErrInvalid: the cache cannot be brought up to date, and a
			// caller that decided again from it would find the lease free
			// and lose the same race again, for ever.
			return fmt.Errorf("natskv: %s %q: lost a race to a record that cannot be read: %w", w.kind, w.lease, err)
		}
		return fmt.Errorf("natskv: %s %q: %w", w.kind, w.lease, w.err)
	case w.err != nil:
		// The write may have landed or not: until a write or a read
		// settles it, nothing is promised from the cached record alone.
		if s := c.known[w.lease]; s != nil {
			s.written = false
		}
		return w.err
	}
	if !w.local {
		if err := c.superseded(w); err != nil {
			return err
		}
	}
	expiry := w.start.Add(w.duration)
	if earlyExpiryFault() { // a deliberate bug, only in -tags faultinject builds (see faultinject.go)
		expiry = w.start.Add(w.duration / 2)
	}
	switch {
	case w.local:
		s := c.known[w.lease]
		if s == nil || !s.held || s.revision != w.expect {
			return fmt.Errorf("natskv: %s %q: %w: the lease changed since the extension was prepared", w.kind, w.lease, lease.ErrInvalid)
		}
		held := *s // the same record, a later expiry
		held.expiry = expiry
		c.hold(w.lease, &held)
	case w.Deletes():
		c.free(w.lease, &state{key: w.key, revision: w.revision})
	default:
		c.hold(w.lease, &state{
			key:      w.key,
			revision: w.revision,
			fence:    cmp.Or(w.fence, w.revision),
			held:     true,
			holder:   w.holder,
			duration: w.duration,
			expiry:   expiry,
			written:  true,
		})
	}
	return nil
}

// superseded returns an error wrapping ErrInvalid if the cache already
// knows a later state of the write's key than the write made: an outcome
// that comes back after a reload, and after further writes, must not put
// the lease back as it was. The same revision, read by a reload before the
// outcome came back, is this write's own record: the outcome installs it.
func (c *Client) superseded(w *Write) error {
	if !c.readLater(w.lease, w.revision) {
		return nil
	}
	return fmt.Errorf("natskv: %s %q: %w: revision %d is older than what the cache has read since", w.kind, w.lease, lease.ErrInvalid, w.revision)
}

// readSinceLost reports whether the cache knows a later state of a lease's
// key than e, read by Run after a lost race. An empty key (e.revision 0)
// is later than a cached delete marker (the server has removed it since)
// and earlier than a cached record (written since: a record goes only
// behind a marker).
func (c *Client) readSinceLost(name string, e entry) bool {
	s := c.known[name]
	switch {
	case e.revision == 0:
		return s != nil && s.held
	case s == nil && !e.deleted:
		// Left out of the cache as unreadable, or gone since.
		_, _, _, err := decodeRecord(e.value)
		return err == nil && e.revision <= c.seen
	}
	return c.readLater(name, e.revision)
}

// readLater reports whether the cache knows a later state of a lease's key
// than revision: a later revision, or the key gone after a load that read
// past revision (a removed marker).
func (c *Client) readLater(name string, revision uint64) bool {
	s := c.known[name]
	if s == nil {
		return revision <= c.seen
	}
	return s.revision > revision
}
