package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/policy"
	"github.com/leaseagent/lease/protocol"
)

// Defaults for the zero values of Config.
const (
	DefaultPrefix        = protocol.DefaultPrefix
	DefaultMaxSleep      = time.Minute
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultMaxNamespaces = 10000
	DefaultMaxDuration   = time.Hour
	DefaultClaimRetries  = 3
	DefaultWriteTimeout  = 10 * time.Second
	DefaultMinBatch      = 16
)

// DefaultMaxNamespace is DefaultMaxNamespaces.
//
// Deprecated: use DefaultMaxNamespaces, named after the field it defaults.
const DefaultMaxNamespace = DefaultMaxNamespaces

// Config configures a Manager. Zero values take the defaults named.
type Config struct {
	// Conn is the NATS connection used for the JetStream bucket and for
	// events; required. The Manager does not close it.
	Conn *nats.Conn

	// Bucket, Replicas and Storage say which KV bucket holds the leases
	// and how to create it if it is missing (see natskv.BucketConfig).
	Bucket   string
	Replicas int
	Storage  jetstream.StorageType

	// DeleteMarkerTTL is how long the delete marker of a released or
	// expired lease stays in the bucket before the server removes it, so
	// that leases named once do not pile up in the bucket and in memory
	// (natskv.BucketConfig.DeleteMarkerTTL): natskv.DefaultDeleteMarkerTTL
	// if zero, for ever if negative, at least a second otherwise. Keep it
	// well above MaxSleep: a namespace that reads only what changed since
	// its last read misses a delete whose marker has gone, until its next
	// full load.
	DeleteMarkerTTL time.Duration

	// Clock decides expiry; clock.System() if nil.
	Clock clock.Clock

	// Prefix begins the subjects events are published on:
	// <Prefix>.expired.<namespace>.<lease> and
	// <Prefix>.claimed.<namespace>.<lease>. DefaultPrefix if empty.
	Prefix string

	// Interest, if set, reports whether a message published on subject
	// now would reach any subscriber. An event that would reach none is
	// not published: NATS would only drop it, after the agent had encoded
	// and sent it. embedded.Server.Interest answers this for the
	// in-process server. Nil: every event is published.
	Interest func(subject string) bool

	// MaxSleep bounds how long a namespace goes without looking at the
	// store: at least this often it reloads its leases, so changes made
	// by other writers are seen even when no request arrives.
	// DefaultMaxSleep if zero.
	MaxSleep time.Duration

	// IdleTimeout is how long a namespace with no held leases, no waiters
	// and no requests keeps its actor; then the actor stops and its memory
	// is freed, and the next request starts it again from the store.
	// DefaultIdleTimeout if zero.
	IdleTimeout time.Duration

	// MaxNamespaces bounds how many namespaces are served at once, so that
	// requests naming ever new namespaces cannot exhaust memory; beyond it,
	// requests for new namespaces fail with ErrUnavailable until idle ones
	// stop. DefaultMaxNamespaces if zero.
	MaxNamespaces int

	// MaxDuration is the longest lease a Claim may ask for.
	// DefaultMaxDuration if zero.
	MaxDuration time.Duration

	// ClaimRetries is how many times a claim that lost a race in the store
	// is decided again from the refreshed state. DefaultClaimRetries if
	// zero.
	ClaimRetries int

	// WriteTimeout bounds each store read and write.
	// DefaultWriteTimeout if zero.
	WriteTimeout time.Duration

	// MinBatch turns on group commit, for servers that fsync every write
	// (SyncAlways, as the embedded server runs by default): there each
	// single write costs an fsync and concurrency does not share them.
	// With group commit a namespace keeps one round of store writes in
	// flight: a write decided while none is in flight goes out at once,
	// alone; writes decided while a round is in flight wait for it to land
	// and go out together as the next round (up to natskv.MaxBatch). A
	// round of at least MinBatch writes is committed as one atomic batch
	// (natskv.Bucket.RunBatch), which shares the fsyncs; a smaller one goes
	// out as concurrent single writes, because a batch has a fixed cost of
	// a few milliseconds. DefaultMinBatch is a good value.
	//
	// Zero or negative leaves group commit off: every write goes out as
	// soon as it is decided, concurrently with the others. That is much
	// faster when the server does not fsync each write, where a single
	// write costs tens of microseconds and a batch is never worth its
	// fixed cost (measured: claims at 32 goroutines 55k/s off, 7-9k/s on).
	MinBatch int

	// ClockDriftRate and WriterID are passed to each namespace's
	// natskv.Client.
	ClockDriftRate float64
	WriterID       string

	// Logger receives the Manager's logs and, at warning level and above,
	// Proto.Actor's. slog.Default() if nil. Lease state changes (claimed,
	// expired, released) are logged at info, extensions at debug.
	Logger *slog.Logger

	// Metrics records what the Manager does; nil records nothing.
	Metrics *metrics.Metrics

	// Policy narrows what the Manager accepts per namespace (durations,
	// lease and holder names, unknown namespaces); a request that breaks
	// it fails with an error wrapping ErrInvalidArgument that names the
	// rule. nil allows every valid request within MaxDuration. See
	// package policy.
	Policy *policy.Policy

	// hooks lets this package's tests reach inside; nil in production.
	hooks *hooks
}

// hooks are test seams. Each is optional.
type hooks struct {
	// runWrite performs a store write sent alone instead of w.Run.
	runWrite func(ctx context.Context, w *natskv.Write)
	// runBatch performs a round of writes sent as atomic batches instead of
	// Bucket.RunBatch.
	runBatch func(ctx context.Context, ws []*natskv.Write) natskv.BatchStats
	// round is called, off the actor's goroutine, when a round of writes
	// has run: how many writes it had and how they were sent.
	round func(namespace string, writes int, stats natskv.BatchStats)
	// receive sees every message a namespace actor handles, first; it may
	// panic.
	receive func(namespace string, msg any)
	// sweepEvery replaces the const of that name if positive.
	sweepEvery time.Duration
	// maxRoundWait replaces the const of that name if positive.
	maxRoundWait time.Duration
	// loadStarted is called, on the actor's goroutine, when a namespace
	// actor starts reading the store: the whole namespace or the changes.
	loadStarted func(namespace string, full bool)
	// loaded is called after a namespace actor installs a snapshot.
	loaded func(namespace string)
	// sending is called by Manager.send when it has found a namespace's
	// actor: before it checks that the actor is not retired (checked
	// false), and after, just before it sends (checked true).
	sending func(namespace string, checked bool)
	// passivated is called when the manager stops an idle namespace.
	passivated func(namespace string)
	// stopped is called when a namespace actor has stopped.
	stopped func(namespace string)
	// newStore replaces the natskv.Client of a namespace.
	newStore func(namespace string, b *natskv.Bucket) (store, error)
}

// Validate returns an error naming the first field that is not valid.
func (c Config) Validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("actors: Config.Conn: must not be nil")
	case c.Prefix != "" && !protocol.ValidPrefix(c.Prefix):
		return fmt.Errorf("actors: Config.Prefix: %q is not a NATS subject prefix of plain tokens", c.Prefix)
	case c.MaxSleep < 0:
		return fmt.Errorf("actors: Config.MaxSleep: %v is negative", c.MaxSleep)
	case c.IdleTimeout < 0:
		return fmt.Errorf("actors: Config.IdleTimeout: %v is negative", c.IdleTimeout)
	case c.MaxNamespaces < 0:
		return fmt.Errorf("actors: Config.MaxNamespaces: %d is negative", c.MaxNamespaces)
	case c.MaxDuration < 0:
		return fmt.Errorf("actors: Config.MaxDuration: %v is negative", c.MaxDuration)
	case c.ClaimRetries < 0:
		return fmt.Errorf("actors: Config.ClaimRetries: %d is negative", c.ClaimRetries)
	case c.WriteTimeout < 0:
		return fmt.Errorf("actors: Config.WriteTimeout: %v is negative", c.WriteTimeout)
	case !(c.ClockDriftRate >= 0 && c.ClockDriftRate < 1): // NaN too
		return fmt.Errorf("actors: Config.ClockDriftRate: %v is not in [0, 1)", c.ClockDriftRate)
	case strings.ContainsFunc(c.WriterID, func(r rune) bool { return r < ' ' }):
		// natskv.Config.Validate refuses it too, but only when a
		// namespace's Client is made: every request would fail.
		return fmt.Errorf("actors: Config.WriterID: %q contains control characters", c.WriterID)
	}
	// The bucket's fields are natskv's to check, one at a time so that the
	// error names the field of this Config that is wrong.
	for _, f := range []struct {
		name string
		cfg  natskv.BucketConfig
	}{
		{"Bucket", natskv.BucketConfig{Name: c.Bucket}},
		{"Replicas", natskv.BucketConfig{Replicas: c.Replicas}},
		{"Storage", natskv.BucketConfig{Storage: c.Storage}},
		{"DeleteMarkerTTL", natskv.BucketConfig{DeleteMarkerTTL: c.DeleteMarkerTTL}},
	} {
		f.cfg.JetStream = noJetStream{}
		if err := f.cfg.Validate(); err != nil {
			return fmt.Errorf("actors: Config.%s: %w", f.name, err)
		}
	}
	if err := c.validatePolicy(); err != nil {
		return err
	}
	return nil
}

// noJetStream stands in for the JetStream context while the bucket fields
// are validated; nothing calls it.
type noJetStream struct{ jetstream.JetStream }

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.System()
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxSleep == 0 {
		c.MaxSleep = DefaultMaxSleep
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxNamespaces == 0 {
		c.MaxNamespaces = DefaultMaxNamespaces
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	if c.ClaimRetries == 0 {
		c.ClaimRetries = DefaultClaimRetries
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.hooks == nil {
		c.hooks = &hooks{}
	}
	return c
}
