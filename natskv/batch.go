package natskv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// MaxBatch is the most writes RunBatch puts in one atomic batch: the
// server's limit.
const MaxBatch = 1000

// maxBatchesInFlight bounds the atomic batches one Bucket has open at once.
// The server refuses more than 50 per stream (error 10210), counting every
// publisher of the stream; the rest is left to other agents.
const maxBatchesInFlight = 16

// Headers of JetStream's atomic batch publish (nats-server 2.12 and later).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// Error codes of atomic batch publishes after which the writes are sent one
// by one: nothing of the batch was stored.
const (
	codeAtomicPublishIncomplete  = 10176
	codeAtomicPublishTooMany     = 10210
	codeAtomicPublishUnsupported = 10177
)

// BatchStats says how RunBatch sent its writes: each batch and each single
// write is one round trip to the server.
type BatchStats struct {
	// Batches is how many atomic batches were sent, committed or refused.
	Batches int
	// Refused is how many of those the server refused because a write's
	// expected revision was stale (error 10071).
	Refused int
	// Singles is how many writes were sent on their own.
	Singles int
	// Largest is the most writes sent in one batch.
	Largest int
}

// Add adds the counts of o to s.
func (s *BatchStats) Add(o BatchStats) {
	s.Batches += o.Batches
	s.Refused += o.Refused
	s.Singles += o.Singles
	s.Largest = max(s.Largest, o.Largest)
}

// RunBatch runs writes as Run would run each of them, but commits them
// together in atomic batches, so that they share the server's fsyncs: with
// SyncAlways every single write costs one, while a batch of up to MaxBatch
// writes costs a few. Each Write's outcome is what Run would give it, and
// Client.Apply applies it as usual: its revision, or an error wrapping
// lease.ErrInvalid (with the key's latest state) if its expected revision
// was stale, or the store's error.
//
// A batch holds at most one write per key: a second write for a key goes in
// a later batch, after the first has landed, as it would if the writes were
// run one after the other in order. A batch is all or nothing, and when the
// server refuses one because a revision was stale it does not say which:
// RunBatch then reads the batch's keys from the stream's leader, fails the
// writes whose key has moved and sends the others again. A batch of one
// write, writes of another Bucket, and every write when the stream does not
// take atomic batches, are sent on their own, concurrently.
//
// RunBatch may be called on any goroutine; each Write must be run once.
func (b *Bucket) RunBatch(ctx context.Context, writes []*Write) BatchStats {
	var stats BatchStats
	todo := make([]*Write, 0, len(writes))
	var alone []*Write
	for _, w := range writes {
		if w.ran {
			continue
		}
		w.ran = true
		switch {
		case w.noop || w.local:
		case w.bucket != b:
			alone = append(alone, w)
		default:
			todo = append(todo, w)
		}
	}
	stats.Add(runAlone(ctx, alone))
	for len(todo) > 0 {
		var chunk []*Write
		chunk, todo = nextBatch(todo)
		stats.Add(b.runBatch(ctx, chunk))
	}
	return stats
}

// nextBatch splits writes into the next batch (at most MaxBatch writes, at
// most one per key, in order) and the rest, in order.
func nextBatch(writes []*Write) (batch, rest []*Write) {
	seen := make(map[string]struct{}, min(len(writes), MaxBatch))
	for _, w := range writes {
		if _, dup := seen[w.key]; dup || len(batch) == MaxBatch {
			rest = append(rest, w)
			continue
		}
		seen[w.key] = struct{}{}
		batch = append(batch, w)
	}
	return batch, rest
}

// runAlone runs writes on their own, concurrently.
func runAlone(ctx context.Context, writes []*Write) BatchStats {
	switch len(writes) {
	case 0:
	case 1:
		writes[0].runAlone(ctx)
	default:
		var wg sync.WaitGroup
		for _, w := range writes {
			wg.Go(func() { w.runAlone(ctx) })
		}
		wg.Wait()
	}
	return BatchStats{Singles: len(writes)}
}

// runBatch commits writes (distinct keys) in one atomic batch, or as many
// as are not stale, resending after a refusal.
func (b *Bucket) runBatch(ctx context.Context, writes []*Write) BatchStats {
	var stats BatchStats
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		if len(writes) < 2 || !b.atomic.Load() {
			stats.Add(runAlone(ctx, writes))
			return stats
		}
		stats.Batches++
		stats.Largest = max(stats.Largest, len(writes))
		first, err := b.publishBatch(ctx, writes)
		if err == nil {
			for i, w := range writes {
				w.revision, w.err = first+uint64(i), nil
			}
			return stats
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			// The outcome is unknown (a timeout, a lost connection): as
			// for a single write, the caller learns it from the store.
			fail(writes, err)
			return stats
		}
		switch apiErr.ErrorCode {
		case codeWrongLastSequence:
			stats.Refused++
			fresh, err := b.dropStale(ctx, writes)
			if err != nil {
				fail(fresh, err)
				return stats
			}
			if len(fresh) == len(writes) {
				// No key has moved, by the leader's account: let each
				// write find its own verdict.
				stats.Add(runAlone(ctx, writes))
				return stats
			}
			writes = fresh
		case codeWrongLastSequenceConstant:
			// An earlier write to one of the keys is still being
			// proposed (replicated streams); retried as a single write
			// is.
			if attempt >= b.attempts {
				stats.Add(runAlone(ctx, writes))
				return stats
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				fail(writes, ctx.Err())
				return stats
			case <-t.C:
			}
			backoff *= 2
		case codeAtomicPublishDisabled, codeAtomicPublishUnsupported:
			b.atomic.Store(false)
			stats.Add(runAlone(ctx, writes))
			return stats
		case codeAtomicPublishIncomplete, codeAtomicPublishTooMany:
			// Nothing of the batch was stored.
			stats.Add(runAlone(ctx, writes))
			return stats
		default:
			fail(writes, err)
			return stats
		}
	}
}

// fail gives every write the store's error err.
func fail(writes []*Write, err error) {
	for _, w := range writes {
		w.revision, w.err = 0, fmt.Errorf("natskv: write %s: %w", w.key, err)
	}
}

// dropStale reads the latest state of each write's key from the stream's
// leader after a refused batch, fails the writes whose key has moved from the
// revision they expect, as a single write that lost its race would fail, and
// returns the others. If a read fails it returns the writes not yet decided
// and the error.
func (b *Bucket) dropStale(ctx context.Context, writes []*Write) ([]*Write, error) {
	fresh := make([]*Write, 0, len(writes))
	for i, w := range writes {
		e, err := b.latest(ctx, w.key)
		if err != nil {
			return append(fresh, writes[i:]...), fmt.Errorf("batch refused, and reading the keys failed: %w", err)
		}
		if e.revision != w.expect {
			w.lost(e, nil)
			continue
		}
		fresh = append(fresh, w)
	}
	return fresh, nil
}

// publishBatch sends writes as one atomic batch and returns the revision of
// the first: the batch is stored in order, in consecutive revisions. Only
// the commit, the last message, asks for a reply; it arrives once the whole
// batch is stored (with SyncAlways, flushed to disk) or refused.
func (b *Bucket) publishBatch(ctx context.Context, writes []*Write) (uint64, error) {
	select {
	case b.batchSlots <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-b.batchSlots }()
	id := nuid.Next()
	nc := b.js.Conn()
	var f jetstream.PubAckFuture
	for i, w := range writes {
		msg := b.newMsg(w.key, w.data, w.Deletes(), w.expect)
		msg.Header.Set(batchIDHeader, id)
		msg.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		var err error
		if i < len(writes)-1 {
			err = nc.PublishMsg(msg)
		} else {
			msg.Header.Set(batchCommitHeader, "1")
			f, err = b.js.PublishMsgAsync(msg)
		}
		if err != nil {
			return 0, err
		}
	}
	select {
	case ack := <-f.Ok():
		n := uint64(len(writes))
		if ack.Sequence < n {
			return 0, fmt.Errorf("batch of %d acknowledged at revision %d", n, ack.Sequence)
		}
		return ack.Sequence - n + 1, nil
	case err := <-f.Err():
		return 0, err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
