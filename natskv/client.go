package natskv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/btree"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/messages"
)

// Clock tells the time. Expiry decisions use only differences between its
// readings, so it must be monotonic: clock.System's readings are, and so are
// a test clock's.
type Clock interface {
	Now() time.Time
}

// Config configures a Client.
type Config struct {
	// Bucket holds the leases; required.
	Bucket *Bucket

	// Namespace is the namespace whose leases the Client manages; it must
	// satisfy lease.ValidateString and be at most MaxNameBytes long.
	Namespace string

	// Clock reads the time for expiry decisions; the system's monotonic
	// clock if nil.
	Clock Clock

	// WriterID names this Client in the records it writes; random if empty.
	WriterID string

	// ClockDriftRate is how much faster, at most, another writer's clock may
	// run than ours, as a fraction (0.001 is 0.1%). A record written by
	// someone else expires duration*(1+ClockDriftRate) after this Client
	// first observed it. Zero assumes equal rates.
	ClockDriftRate float64

	// Timeout bounds each store operation of the methods that take no
	// context; 10s if zero.
	Timeout time.Duration
}

// Validate returns an error naming the first field that is not valid.
func (c Config) Validate() error {
	switch {
	case c.Bucket == nil:
		return errors.New("natskv: Config.Bucket: must not be nil")
	case !(c.ClockDriftRate >= 0 && c.ClockDriftRate < 1): // NaN too
		return fmt.Errorf("natskv: Config.ClockDriftRate: %v is not in [0, 1)", c.ClockDriftRate)
	case c.Timeout < 0:
		return fmt.Errorf("natskv: Config.Timeout: %v is negative", c.Timeout)
	case c.WriterID != "" && strings.ContainsFunc(c.WriterID, func(r rune) bool { return r < ' ' }):
		return fmt.Errorf("natskv: Config.WriterID: %q contains control characters", c.WriterID)
	}
	if err := CheckName("namespace", c.Namespace); err != nil {
		return fmt.Errorf("natskv: Config.Namespace: %w", err)
	}
	return nil
}

// Client is a lease.Client for one namespace of a Bucket. It keeps a cache of
// the namespace's leases, changed only by its own writes and by Refresh.
//
// A Client is not safe for concurrent use, with two exceptions that let a
// caller keep many writes in flight: Write.Run and Client.Load may run on any
// goroutine.
type Client struct {
	bucket    *Bucket
	namespace string
	prefix    string
	clock     Clock
	writerID  string
	drift     float64
	timeout   time.Duration

	// known holds the latest state seen of each lease key: held leases and
	// the delete markers of released ones.
	known map[string]*state
	// expiries orders the held leases of known by expiry, and names by
	// name, once LeasesAfter has needed it; held counts them (held.go).
	expiries expiryQueue
	names    *btree.BTreeG[string]
	held     int
	// seen is the bucket revision up to which known reflects every change
	// to the namespace: LoadChanges reads only what came after it.
	seen uint64
}

// state is the Client's knowledge of one lease key.
type state struct {
	key      string
	revision uint64 // of the record, or of the delete marker
	fence    uint64 // of the record that made holder the holder
	held     bool
	holder   string
	duration time.Duration
	expiry   time.Time // on the Client's clock
	// written: this Client wrote the record at revision and knows the
	// write landed, so expiry counts from the write's start, which no
	// other process can have observed earlier. Only then may an extension
	// be promised without a write (a no-op or local extension): a record
	// observed (written elsewhere, or left by a write whose outcome was
	// unknown) may have been seen earlier by a writer that will expire it
	// sooner, or may already be gone.
	written bool
}

var _ lease.Client = (*Client)(nil)

// NewClient returns a Client for cfg.Namespace with an empty cache; call
// Refresh to load the namespace.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		bucket:    cfg.Bucket,
		namespace: cfg.Namespace,
		prefix:    keyPrefix(cfg.Namespace),
		clock:     cfg.Clock,
		writerID:  cfg.WriterID,
		drift:     cfg.ClockDriftRate,
		timeout:   cfg.Timeout,
		known:     make(map[string]*state),
	}
	if c.clock == nil {
		c.clock = clock.System()
	}
	if c.writerID == "" {
		c.writerID = nuid.Next()
	}
	if c.timeout == 0 {
		c.timeout = 10 * time.Second
	}
	return c, nil
}

// Namespace returns the namespace the Client manages.
func (c *Client) Namespace() string { return c.namespace }

// Fence is a trapdoor key: passed to the Trapdoor of a held lease's Info (or,
// through a manager, to Token.Check), it receives the fencing token of the
// holder's tenure: the KV revision of the record that made it the holder.
//
// Revision stays the same while the holder extends the lease and strictly
// increases each time the lease gets a new holder, so a resource that
// remembers the highest Revision it has seen for Bucket and Key can refuse a
// holder whose lease has passed to someone else.
type Fence struct {
	Bucket   string
	Key      string
	Revision uint64
}

// ClaimLease is part of lease.Client, with the Client's timeout.
func (c *Client) ClaimLease(name string, request lease.Request) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.ClaimLeaseContext(ctx, name, request)
}

// ExtendLease is part of lease.Client, with the Client's timeout.
func (c *Client) ExtendLease(name string, request lease.Request) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.ExtendLeaseContext(ctx, name, request)
}

// ExpireLease is part of lease.Client, with the Client's timeout.
func (c *Client) ExpireLease(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.ExpireLeaseContext(ctx, name)
}

// Refresh is part of lease.Client, with the Client's timeout. A non-nil
// error does not always mean the cache is unchanged: see RefreshContext.
func (c *Client) Refresh() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.RefreshContext(ctx)
}

// ClaimLeaseContext records request.Holder as the holder of a lease that is
// not held: a create-if-absent write. The lease then expires
// request.Duration after the write started.
func (c *Client) ClaimLeaseContext(ctx context.Context, name string, request lease.Request) error {
	return c.do(ctx, name, func() (*Write, error) { return c.PrepareClaim(name, request) })
}

// ExtendLeaseContext moves the expiry of a lease held by request.Holder to
// request.Duration after the write started: a write at the cached revision.
// If the Client wrote the lease's record itself (and knows it landed) and
// the lease would expire no earlier than that anyway, it writes nothing and
// succeeds; an extension of a record it only observed is always written
// (see "Extensions without a write" in the package doc).
func (c *Client) ExtendLeaseContext(ctx context.Context, name string, request lease.Request) error {
	return c.do(ctx, name, func() (*Write, error) { return c.PrepareExtend(name, request) })
}

// ReleaseLeaseContext removes a lease that holder holds, before its expiry.
// It returns ErrInvalid if holder does not hold it.
func (c *Client) ReleaseLeaseContext(ctx context.Context, name, holder string) error {
	return c.do(ctx, name, func() (*Write, error) { return c.PrepareRelease(name, holder) })
}

// ExpireLeaseContext removes a lease whose expiry has passed on the Client's
// clock: a delete at the cached revision.
func (c *Client) ExpireLeaseContext(ctx context.Context, name string) error {
	return c.do(ctx, name, func() (*Write, error) { return c.PrepareExpire(name) })
}

// do prepares a write from the cache, reloading the lease's key once if the
// cache says the write cannot succeed, then runs and applies it.
func (c *Client) do(ctx context.Context, name string, prepare func() (*Write, error)) error {
	w, err := prepare()
	if errors.Is(err, lease.ErrInvalid) {
		// The cache may be stale: decide again from the store's latest.
		if rerr := c.reload(ctx, name); rerr != nil {
			return rerr
		}
		w, err = prepare()
	}
	if err != nil {
		return err
	}
	w.Run(ctx)
	return c.Apply(w)
}

// reload replaces the cached state of one lease with the store's latest.
func (c *Client) reload(ctx context.Context, name string) error {
	key := c.prefix + EscapeName(name)
	e, err := c.bucket.latest(ctx, key)
	if err != nil {
		return err
	}
	return c.observe(name, e, c.clock.Now())
}

// Leases is part of lease.Client: the held leases the Client knows of, by
// name, with expiries on the Client's clock. The map is the caller's own.
// It costs as many leases as the namespace holds; LeasesAfter lists them
// a page at a time.
func (c *Client) Leases() map[string]lease.Info {
	out := make(map[string]lease.Info, c.held)
	for name, s := range c.known {
		if s.held {
			out[name] = c.info(s)
		}
	}
	return out
}

// Lease returns what the Client knows of one lease, and whether it is held.
func (c *Client) Lease(name string) (lease.Info, bool) {
	s, ok := c.known[name]
	if !ok || !s.held {
		return lease.Info{}, false
	}
	return c.info(s), true
}

// Count returns how many leases the cache holds, expired or not; it is
// kept as they come and go, so it costs nothing.
func (c *Client) Count() int { return c.held }

// Holder returns the holder and expiry of a held lease, and whether it is
// held; unlike Lease it allocates nothing.
func (c *Client) Holder(name string) (holder string, expiry time.Time, ok bool) {
	s, found := c.known[name]
	if !found || !s.held {
		return "", time.Time{}, false
	}
	return s.holder, s.expiry, true
}

// Fence returns the fencing token of a held lease, and whether it is held.
func (c *Client) Fence(name string) (uint64, bool) {
	s, ok := c.known[name]
	if !ok || !s.held {
		return 0, false
	}
	return s.fence, true
}

func (c *Client) info(s *state) lease.Info {
	fence := Fence{Bucket: c.bucket.name, Key: s.key, Revision: s.fence}
	return lease.Info{
		Holder: s.holder,
		Expiry: s.expiry,
		Trapdoor: func(key interface{}) error {
			switch k := key.(type) {
			case nil:
				return nil
			case *Fence:
				if k == nil {
					return errors.New("natskv: trapdoor key is a nil *Fence")
				}
				*k = fence
				return nil
			default:
				return fmt.Errorf("natskv: trapdoor key of type %T not supported; use *natskv.Fence", key)
			}
		},
	}
}

// RefreshContext reloads the whole namespace in one pass over the bucket.
// Leases whose revision has not changed keep their expiry; others expire by
// the clock rule from now.
//
// If the bucket cannot be read, the cache is unchanged and the error says
// why. Otherwise the new view is installed even if the error is not nil:
// records that cannot be read (bytes that are not a lease record, a record
// without a valid holder or a positive duration, a key that is not a lease
// key) are left out of the cache, the rest is loaded, and the error names
// each one left out. No write can succeed against such a record (every
// write is revision-checked), so its lease can be neither claimed nor
// expired until someone deletes the key. Fields of a record that this
// version does not know are ignored (protobuf's rule), not refused.
func (c *Client) RefreshContext(ctx context.Context) error {
	snap, err := c.Load(ctx)
	if err != nil {
		return err
	}
	return c.ApplySnapshot(snap)
}

// Snapshot is the state of a namespace read from the bucket by Load, or
// what changed in it, read by LoadChanges.
type Snapshot struct {
	entries []entry
	// upTo is a revision up to which the read saw every change: for Load,
	// the bucket's last revision before the read began (every key written
	// at or before it is in entries, unless it has been purged); for
	// LoadChanges, the last revision read, or since if there was none.
	upTo uint64
	// changes marks a LoadChanges snapshot: entries are the writes after
	// since, in order, and keys not among them did not change.
	changes bool
}

// Load reads the namespace's leases from the bucket without touching the
// cache; ApplySnapshot installs the result. Unlike the rest of the Client,
// Load may run on any goroutine.
func (c *Client) Load(ctx context.Context) (*Snapshot, error) {
	upTo, err := c.bucket.lastRevision(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := c.bucket.load(ctx, c.prefix+"*", 0)
	if err != nil {
		return nil, err
	}
	return &Snapshot{entries: entries, upTo: upTo}, nil
}

// Len returns the number of records the snapshot holds.
func (s *Snapshot) Len() int { return len(s.entries) }

// Seen returns the revision up to which the cache reflects every change to
// the namespace: the point LoadChanges reads on from. It is 0 until a
// snapshot of a bucket with writes in it has been applied; changes since 0
// are every write the stream still holds, so load the first snapshot with
// Load.
func (c *Client) Seen() uint64 { return c.seen }

// LoadChanges reads the writes to the namespace after revision since (from
// Seen), in order, without touching the cache; ApplySnapshot installs them.
// It costs as much as there are changes, where Load costs as much as there
// are leases. It cannot see a key whose messages were removed from the
// stream without a marker (a purge of the whole stream by an operator); a
// full Load does. Like Load, it may run on any goroutine.
func (c *Client) LoadChanges(ctx context.Context, since uint64) (*Snapshot, error) {
	entries, err := c.bucket.load(ctx, c.prefix+"*", since, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(since+1))
	if err != nil {
		return nil, err
	}
	upTo := since
	if len(entries) > 0 {
		upTo = max(upTo, entries[len(entries)-1].revision)
	}
	return &Snapshot{entries: entries, upTo: upTo, changes: true}, nil
}

// ApplySnapshot installs snap: a Load's replaces the cache, a
// LoadChanges's updates the keys it names. What the Client wrote after the
// snapshot was read (possible when the read ran beside writes) is newer
// than the snapshot, and stays.
func (c *Client) ApplySnapshot(snap *Snapshot) error {
	defer func() { c.seen = max(c.seen, snap.upTo) }()
	// A Load's snapshot goes into a new map, so that the cache shrinks
	// when keys have gone; old keeps what has not been moved across.
	var old map[string]*state
	if !snap.changes {
		old, c.known = c.known, make(map[string]*state, len(snap.entries))
		for name, s := range old {
			if s.revision > snap.upTo {
				c.move(old, name)
			}
		}
	}
	now := c.clock.Now()
	var errs []error
	for _, e := range snap.entries {
		name, err := leaseFromKey(c.prefix, e.key)
		if err != nil {
			errs = append(errs, fmt.Errorf("natskv: namespace %q: %w", c.namespace, err))
			continue
		}
		if old != nil {
			c.move(old, name) // observe keeps its expiry if the revision is unchanged
		}
		if s, ok := c.known[name]; ok && s.revision > e.revision {
			continue
		}
		if err := c.observe(name, e, now); err != nil {
			errs = append(errs, err)
		}
	}
	c.forget(old)
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// observe records the latest state of one lease key, seen at now.
func (c *Client) observe(name string, e entry, now time.Time) error {
	if e.deleted {
		c.free(name, &state{key: e.key, revision: e.revision})
		return nil
	}
	if s, ok := c.known[name]; ok && s.held && s.revision == e.revision {
		return nil // same record: keep the expiry of its first observation
	}
	holder, d, fence, err := decodeRecord(e.value)
	if err != nil {
		c.free(name, nil)
		return fmt.Errorf("natskv: namespace %q: lease %q: key %q revision %d: %w", c.namespace, name, e.key, e.revision, err)
	}
	c.hold(name, &state{
		key:      e.key,
		revision: e.revision,
		fence:    cmp.Or(fence, e.revision),
		held:     true,
		holder:   holder,
		duration: d,
		expiry:   now.Add(c.observedLifetime(d)),
	})
	return nil
}

// observedLifetime returns how long after its first observation a record of
// duration d written by someone else expires: d plus ClockDriftRate of d,
// saturating at the longest Duration rather than overflowing to a negative
// one (which would expire a lease of a few centuries at once).
func (c *Client) observedLifetime(d time.Duration) time.Duration {
	extra := time.Duration(float64(d) * c.drift) // < d, since drift < 1
	if d > math.MaxInt64-extra {
		return math.MaxInt64
	}
	return d + extra
}

// decodeRecord returns the holder, duration and claim revision of a stored
// record.
func decodeRecord(data []byte) (holder string, d time.Duration, fence uint64, err error) {
	var rec messages.LeaseRecord
	if err := proto.Unmarshal(data, &rec); err != nil {
		return "", 0, 0, fmt.Errorf("unreadable lease record: %w", err)
	}
	if err := rec.GetDuration().CheckValid(); err != nil {
		return "", 0, 0, fmt.Errorf("lease record has a bad duration: %w", err)
	}
	req := lease.Request{Holder: rec.GetHolder(), Duration: rec.GetDuration().AsDuration()}
	if err := req.Validate(); err != nil {
		return "", 0, 0, fmt.Errorf("lease record: %w", err)
	}
	return req.Holder, req.Duration, rec.GetClaimRevision(), nil
}

func (c *Client) encodeRecord(name string, r lease.Request, claimRevision uint64, wallStart time.Time) ([]byte, error) {
	return proto.Marshal(&messages.LeaseRecord{
		Holder:        r.Holder,
		Duration:      durationpb.New(r.Duration),
		WriterId:      c.writerID,
		WriterStart:   timestamppb.New(wallStart),
		Namespace:     c.namespace,
		Lease:         name,
		ClaimRevision: claimRevision,
	})
}
