package natskv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
)

// DefaultBucket is the name of the KV bucket used when BucketConfig.Name is
// empty.
const DefaultBucket = "leases"

// DefaultDeleteMarkerTTL is how long the delete marker of a released or
// expired lease stays in the bucket when BucketConfig.DeleteMarkerTTL is
// zero.
const DefaultDeleteMarkerTTL = 2 * time.Minute

// JetStream error codes that decide how a failed revision-checked write is
// treated.
const (
	// codeWrongLastSequence means another write got there first.
	codeWrongLastSequence = 10071
	// codeWrongLastSequenceConstant is reported by replicated streams while
	// an earlier write to the subject is still being proposed, even when the
	// expected revision was right. It is retried.
	codeWrongLastSequenceConstant = 10164
	// codeAtomicPublishDisabled: the stream does not allow atomic batches.
	codeAtomicPublishDisabled = 10174
)

// Headers of the KV protocol that mark a delete.
const (
	kvOperationHeader = "KV-Operation"
	kvOperationDelete = "DEL"
	kvOperationPurge  = "PURGE"
)

// BucketConfig says which KV bucket holds the leases and how to create it.
type BucketConfig struct {
	// JetStream is the JetStream context the bucket is reached through.
	JetStream jetstream.JetStream

	// Name is the bucket's name; DefaultBucket if empty.
	Name string

	// Replicas is the number of copies the bucket keeps when it is created;
	// 1 if zero. It does not change an existing bucket.
	Replicas int

	// Storage is where a created bucket keeps its data; file storage unless
	// set to jetstream.MemoryStorage.
	Storage jetstream.StorageType

	// ConflictRetries is how many times a write that a replicated bucket
	// answers with error 10164 is retried; 5 if zero.
	ConflictRetries int

	// DeleteMarkerTTL is how long the delete marker that a release or an
	// expiry leaves stays in the bucket; then the server removes it, and
	// with it the last trace of the lease's key, so that leases named once
	// and never again do not pile up in the bucket and in the memory of
	// the server and of the Clients. DefaultDeleteMarkerTTL if zero;
	// negative keeps markers for ever. The server counts whole seconds, so
	// a positive value must be at least a second.
	//
	// A reader that reads only changes (Client.LoadChanges) misses a
	// delete whose marker was removed before it read: keep the TTL well
	// above the interval between full loads (actors.Config.MaxSleep).
	// Markers carry the TTL only on a stream that allows per-message TTLs
	// (nats-server 2.11 and later); OpenBucket turns that on.
	DeleteMarkerTTL time.Duration
}

// Validate returns an error naming the first field that is not valid.
func (c BucketConfig) Validate() error {
	switch {
	case c.JetStream == nil:
		return errors.New("natskv: BucketConfig.JetStream: must not be nil")
	case c.Name != "" && !ValidBucketName(c.Name):
		return fmt.Errorf("natskv: BucketConfig.Name: %q may contain only letters, digits, '-' and '_'", c.Name)
	case c.Replicas < 0 || c.Replicas > 5:
		return fmt.Errorf("natskv: BucketConfig.Replicas: %d is not between 1 and 5 (0 means 1)", c.Replicas)
	case c.Storage != jetstream.FileStorage && c.Storage != jetstream.MemoryStorage:
		return fmt.Errorf("natskv: BucketConfig.Storage: unknown storage type %d", c.Storage)
	case c.ConflictRetries < 0:
		return fmt.Errorf("natskv: BucketConfig.ConflictRetries: %d is negative", c.ConflictRetries)
	case c.DeleteMarkerTTL > 0 && c.DeleteMarkerTTL < time.Second:
		return fmt.Errorf("natskv: BucketConfig.DeleteMarkerTTL: %v is less than the server's resolution of a second (negative keeps markers for ever)", c.DeleteMarkerTTL)
	}
	return nil
}

// ValidBucketName reports whether name may name a bucket: letters, digits,
// '-' and '_' only.
func ValidBucketName(name string) bool {
	return isPlain(name)
}

// Bucket is a KV bucket of leases. It is safe for concurrent use; the
// Clients of many namespaces can share one.
type Bucket struct {
	name     string
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	stream   jetstream.Stream
	prefix   string // subject prefix of the bucket's keys, "$KV.<name>."
	attempts int
	// markerTTL is the Nats-TTL header of delete markers, in seconds; empty
	// when markers stay for ever.
	markerTTL string

	// atomic is whether the stream takes atomic batch publishes; RunBatch
	// sends writes one by one while it is false.
	atomic atomic.Bool
	// batchSlots bounds the atomic batches this Bucket has in flight at
	// once: the server allows 50 per stream, for all its publishers.
	batchSlots chan struct{}
}

// OpenBucket binds the bucket named in cfg, creating it if it does not exist.
//
// Reads that decide safety must come from the stream's leader, so the bucket's
// stream is set not to answer direct gets (which followers of a replicated
// stream may answer from stale state); an existing bucket that allows them is
// updated.
func OpenBucket(ctx context.Context, cfg BucketConfig) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = 5
	}
	if cfg.DeleteMarkerTTL == 0 {
		cfg.DeleteMarkerTTL = DefaultDeleteMarkerTTL
	}
	js := cfg.JetStream
	if _, err := js.KeyValue(ctx, cfg.Name); errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Name,
			Description: "leaseagent leases",
			Replicas:    cfg.Replicas,
			Storage:     cfg.Storage,
		})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("natskv: create bucket %q: %w", cfg.Name, err)
		}
	} else if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w (is JetStream enabled on the server, and in this account?)", cfg.Name, err)
	} else if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w", cfg.Name, err)
	}

	streamName := "KV_" + cfg.Name
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w", cfg.Name, err)
	}
	if stream, err = configureStream(ctx, js, stream, cfg.DeleteMarkerTTL > 0); err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: %w", cfg.Name, err)
	}
	// Bind after the update so that the handle reads from the leader too.
	kv, err := js.KeyValue(ctx, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w", cfg.Name, err)
	}
	return newBucket(cfg, kv, stream), nil
}

// configureStream updates the bucket's stream, in one update, to what a
// Bucket needs:
//
//   - no direct gets, so that reads that decide safety come from the
//     stream's leader (required);
//   - atomic batch publishes, for group commit (RunBatch);
//   - per-message TTLs if markerTTL, for delete markers that expire.
//
// A server too old to know the last two drops them from the configuration,
// and the Bucket then writes one message at a time, or keeps markers. One
// update rather than one per setting: each is a proposal to the JetStream
// cluster, and agents that start together read and update the
// configuration at the same time. An update from a configuration another
// agent has changed meanwhile may fail (the server refuses to turn
// per-message TTLs off again): the stream is read again and the update
// retried.
func configureStream(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, markerTTL bool) (jetstream.Stream, error) {
	for attempt := 1; ; attempt++ {
		have := stream.CachedInfo().Config
		want := have
		want.AllowDirect = false
		want.AllowAtomicPublish = true
		want.AllowMsgTTL = have.AllowMsgTTL || markerTTL
		if want.AllowDirect == have.AllowDirect && want.AllowAtomicPublish == have.AllowAtomicPublish && want.AllowMsgTTL == have.AllowMsgTTL {
			return stream, nil
		}
		updated, err := js.UpdateStream(ctx, want)
		switch {
		case err == nil:
			return updated, nil
		case attempt == 3 && have.AllowDirect:
			return nil, fmt.Errorf("turn off direct get: %w", err)
		case attempt == 3:
			return stream, nil // only what speeds writes up, or frees markers, is missing
		}
		if stream, err = js.Stream(ctx, have.Name); err != nil {
			return nil, err
		}
	}
}

// BindBucket binds the existing bucket named in cfg, to read it: unlike
// OpenBucket it neither creates the bucket nor changes its configuration
// (cfg.Replicas and cfg.Storage are ignored), so it needs no permission to
// manage streams. If there is no such bucket it returns an error wrapping
// jetstream.ErrBucketNotFound.
//
// A bucket created by OpenBucket answers reads from its stream's leader. One
// created otherwise may let followers answer direct gets: decide nothing
// about safety from a Client on such a Bucket (its writes are still
// revision-checked).
func BindBucket(ctx context.Context, cfg BucketConfig) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = DefaultBucket
	}
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = 5
	}
	if cfg.DeleteMarkerTTL == 0 {
		cfg.DeleteMarkerTTL = DefaultDeleteMarkerTTL
	}
	kv, err := cfg.JetStream.KeyValue(ctx, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w", cfg.Name, err)
	}
	stream, err := cfg.JetStream.Stream(ctx, "KV_"+cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Deleted between the two look-ups.
		err = jetstream.ErrBucketNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %q: %w", cfg.Name, err)
	}
	return newBucket(cfg, kv, stream), nil
}

// newBucket returns the Bucket of cfg (defaults filled in), bound to kv and
// its stream.
func newBucket(cfg BucketConfig, kv jetstream.KeyValue, stream jetstream.Stream) *Bucket {
	b := &Bucket{
		name:       cfg.Name,
		js:         cfg.JetStream,
		kv:         kv,
		stream:     stream,
		prefix:     "$KV." + cfg.Name + ".",
		attempts:   cfg.ConflictRetries + 1,
		batchSlots: make(chan struct{}, maxBatchesInFlight),
	}
	b.atomic.Store(stream.CachedInfo().Config.AllowAtomicPublish)
	if cfg.DeleteMarkerTTL > 0 && stream.CachedInfo().Config.AllowMsgTTL {
		b.markerTTL = strconv.FormatInt(int64(cfg.DeleteMarkerTTL.Round(time.Second)/time.Second), 10)
	}
	return b
}

// AtomicBatches reports whether RunBatch commits writes in atomic batches:
// the bucket's stream allows them (OpenBucket turns that on) and the server
// has not refused one.
func (b *Bucket) AtomicBatches() bool { return b.atomic.Load() }

// Name returns the bucket's name.
func (b *Bucket) Name() string { return b.name }

// StreamInfo returns the current information of the bucket's stream, from
// its leader: its configuration (replicas), its state and, on a cluster,
// its leader and replicas.
func (b *Bucket) StreamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: stream info: %w", b.name, err)
	}
	return info, nil
}

// CountHeld returns how many leases each namespace of the bucket holds, by
// namespace name, in one pass over the bucket that reads keys and headers
// only: the keys whose latest record is a lease rather than a delete
// marker. A lease counts until an agent deletes it, which it does as soon as
// it expires while its namespace has an owner. Keys that are not lease keys
// (anything other than namespace.lease in the escaped form) are skipped.
func (b *Bucket) CountHeld(ctx context.Context) (map[string]int, error) {
	entries, err := b.load(ctx, ">", 0, jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int)
	for _, e := range entries {
		if e.deleted {
			continue
		}
		escaped, rest, ok := strings.Cut(e.key, ".")
		if !ok || rest == "" || strings.Contains(rest, ".") {
			continue
		}
		ns, err := UnescapeName(escaped)
		if err != nil {
			continue
		}
		if _, err := UnescapeName(rest); err != nil {
			continue
		}
		counts[ns]++
	}
	return counts, nil
}

// entry is one key's latest state in the bucket.
type entry struct {
	key      string
	revision uint64
	deleted  bool
	value    []byte
}

// errConflict marks a write that lost to another writer.
var errConflict = fmt.Errorf("%w: revision changed", lease.ErrInvalid)

// write publishes value (or, with del, a delete marker) to key, on condition
// that the key's latest revision is expect (0: the key has never been
// written). It returns the revision of the new message, errConflict if the
// condition failed, or the transport's error.
func (b *Bucket) write(ctx context.Context, key string, value []byte, del bool, expect uint64) (uint64, error) {
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		msg := b.newMsg(key, value, del, expect)
		var ack *jetstream.PubAck
		f, err := b.js.PublishMsgAsync(msg)
		if err == nil {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			return 0, fmt.Errorf("natskv: write %s: %w", key, err)
		}
		switch apiErr.ErrorCode {
		case codeWrongLastSequence:
			return 0, errConflict
		case codeWrongLastSequenceConstant:
			if attempt >= b.attempts {
				// The earlier write never settled: treat it as another
				// writer's, so the caller reloads the key and decides again.
				return 0, errConflict
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, fmt.Errorf("natskv: write %s: %w", key, ctx.Err())
			case <-t.C:
			}
			backoff *= 2
		default:
			return 0, fmt.Errorf("natskv: write %s: %w", key, err)
		}
	}
}

// newMsg returns the message that writes value (or, with del, a delete
// marker) to key on condition that the key's latest revision is expect (0:
// the key has never been written). Single writes and batches send the same
// message; a batch adds its own headers.
func (b *Bucket) newMsg(key string, value []byte, del bool, expect uint64) *nats.Msg {
	msg := &nats.Msg{Subject: b.prefix + key, Data: value, Header: nats.Header{}}
	if del {
		msg.Header.Set(kvOperationHeader, kvOperationDelete)
		if b.markerTTL != "" {
			msg.Header.Set(jetstream.MsgTTLHeader, b.markerTTL)
		}
	}
	// What jetstream.WithExpectLastSequencePerSubject(expect) sets.
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
	return msg
}

// latest reads the latest state of key from the stream's leader.
func (b *Bucket) latest(ctx context.Context, key string) (entry, error) {
	msg, err := b.stream.GetLastMsgForSubject(ctx, b.prefix+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry{key: key, deleted: true}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("natskv: read %s: %w", key, err)
	}
	return entry{key: key, revision: msg.Sequence, deleted: isDelete(msg.Header), value: msg.Data}, nil
}

// lastRevision returns the revision of the bucket's latest write.
func (b *Bucket) lastRevision(ctx context.Context) (uint64, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natskv: bucket %q: %w", b.name, err)
	}
	return info.State.LastSeq, nil
}

// load reads the latest state of every key that matches filter, in one pass
// over the bucket: deleted keys are included, as their delete markers;
// opts are more options of the watch it reads with, which reads the writes
// after revision since (0: every key's latest).
//
// The watch reads through a consumer, and nats-server places a consumer
// on any replica of a replicated bucket, including one that lags behind
// the stream leader (a node just restarted): measured here, a full load
// then missed held leases. So load first asks the leader for the latest
// revision under filter, and refuses a read that did not get that far,
// trying again loadAttempts times. (The leader finds that revision by
// walking the filter's keys; a read of the changes since a revision,
// which costs only as much as there were changes, skips it where there is
// no other replica to lag, as on a single server.)
func (b *Bucket) load(ctx context.Context, filter string, since uint64, opts ...jetstream.WatchOpt) ([]entry, error) {
	check := since == 0 || b.stream.CachedInfo().Config.Replicas > 1
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var floor uint64
		if check {
			// A JetStream cluster that has just formed, or changed its
			// leader, can leave a request unanswered: ask again rather
			// than wait out the caller's whole deadline.
			fctx, cancel := context.WithTimeout(ctx, floorWait)
			var err error
			floor, err = b.latestUnder(fctx, filter)
			unanswered := fctx.Err() != nil && ctx.Err() == nil
			cancel()
			switch {
			case err != nil && unanswered && attempt < loadAttempts:
				continue
			case err != nil:
				return nil, err
			}
		}
		entries, err := b.watchAll(ctx, filter, opts...)
		if err != nil {
			return nil, err
		}
		got := since
		for _, e := range entries {
			got = max(got, e.revision)
		}
		if got >= floor {
			return entries, nil
		}
		if attempt == loadAttempts {
			return nil, fmt.Errorf("natskv: load %s: read up to revision %d, but the stream leader has %d: a replica that lags served the read", filter, got, floor)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("natskv: load %s: %w", filter, ctx.Err())
		case <-t.C:
		}
		backoff *= 2
	}
}

// loadAttempts bounds the reads load makes before it gives up on a
// lagging replica: about a second of backoff in all.
const loadAttempts = 7

// floorWait is how long load waits for the leader to say where the
// namespace's latest revision is before it asks again.
const floorWait = 2 * time.Second

// latestUnder returns the revision of the latest write to a key that
// matches filter (0 if there is none), read from the stream leader.
//
// If that write is a delete marker with a TTL, a replica whose clock runs
// ahead of the leader's may have removed it already, and a load it serves
// never gets that far: such loads fail (the namespace keeps its cache, or
// is unavailable until its first load) until the leader removes the
// marker too. Accepting them instead would accept any lagging replica's
// read whenever the newest write is a release, which is most of the time.
func (b *Bucket) latestUnder(ctx context.Context, filter string) (uint64, error) {
	msg, err := b.stream.GetLastMsgForSubject(ctx, b.prefix+filter)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("natskv: read the latest revision of %s: %w", filter, err)
	}
	return msg.Sequence, nil
}

// watchAll reads what a watch of filter delivers before it says every
// key's latest value has been delivered.
func (b *Bucket) watchAll(ctx context.Context, filter string, opts ...jetstream.WatchOpt) ([]entry, error) {
	w, err := b.kv.Watch(ctx, filter, opts...)
	if err != nil {
		return nil, fmt.Errorf("natskv: watch %s: %w", filter, err)
	}
	defer w.Stop()
	var entries []entry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natskv: load %s: %w", filter, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("natskv: load %s: watch stopped", filter)
			}
			if e == nil { // every key's latest value has been delivered
				return entries, nil
			}
			entries = append(entries, entry{
				key:      e.Key(),
				revision: e.Revision(),
				deleted:  e.Operation() != jetstream.KeyValuePut,
				value:    e.Value(),
			})
		}
	}
}

func isDelete(h nats.Header) bool {
	switch h.Get(kvOperationHeader) {
	case kvOperationDelete, kvOperationPurge:
		return true
	}
	// Markers the server writes itself (per-key TTL, purge by limits).
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// keyPrefix returns the KV key prefix of a namespace, dot included.
func keyPrefix(namespace string) string {
	return EscapeName(namespace) + "."
}

// leaseFromKey returns the lease name stored under key in the namespace whose
// key prefix is prefix.
func leaseFromKey(prefix, key string) (string, error) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || strings.Contains(rest, ".") {
		return "", fmt.Errorf("key %q is not a lease key of this namespace", key)
	}
	return UnescapeName(rest)
}
