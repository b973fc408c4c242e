package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// roundLog records the rounds of writes the namespace actors send.
type roundLog struct {
	mu     sync.Mutex
	rounds []round
}

type round struct {
	writes int
	stats  natskv.BatchStats
}

func (l *roundLog) add(_ string, writes int, stats natskv.BatchStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rounds = append(l.rounds, round{writes, stats})
}

func (l *roundLog) get() []round {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]round(nil), l.rounds...)
}

// totals returns the writes the rounds sent and the store round trips they
// took (one per batch, one per single write).
func (l *roundLog) totals() (writes, trips int, stats natskv.BatchStats) {
	for _, r := range l.get() {
		writes += r.writes
		trips += r.stats.Batches + r.stats.Singles
		stats.Add(r.stats)
	}
	return writes, trips, stats
}

// gate holds the first write sent alone until it is opened, and counts the
// claim requests the actors receive, so that a test knows when claims are
// waiting for the next round.
type gate struct {
	entered, open chan struct{}
	claims        chan string
	once          sync.Once
}

func newGate(cfg *Config) *gate {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{}), claims: make(chan string, 10000)}
	// The gated round is held up for as long as the test takes, however
	// slow the machine: the writes behind it must wait for it, not go out
	// beside it as they would behind a stuck round.
	cfg.hooks.maxRoundWait = time.Hour
	cfg.hooks.runWrite = func(ctx context.Context, w *natskv.Write) {
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.entered)
			<-g.open
		}
		w.Run(ctx)
	}
	cfg.hooks.receive = func(_ string, msg any) {
		if m, ok := msg.(*claimRequest); ok {
			g.claims <- m.lease
		}
	}
	return g
}

// received waits until the actors have received n claim requests, then
// until the actor of n has handled them: a request sent after them is
// answered after them.
func (g *gate) received(t *testing.T, h *harness, n *Namespace, count int) {
	t.Helper()
	for range count {
		select {
		case <-g.claims:
		case <-time.After(patience):
			t.Fatal("claims did not reach the actor")
		}
	}
	if _, err := n.Leases(h.ctx()); err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommit: claims decided while a write is in flight wait for it,
// then go out together as the next round: as one atomic batch if there are
// at least MinBatch of them, else as single writes. Every claim gets the
// answer it would get alone.
func TestGroupCommit(t *testing.T) {
	const waiting = 20
	tests := []struct {
		minBatch int
		want     natskv.BatchStats // of the second round
	}{
		{minBatch: 2, want: natskv.BatchStats{Batches: 1, Largest: waiting}},
		{minBatch: waiting, want: natskv.BatchStats{Batches: 1, Largest: waiting}},
		{minBatch: waiting + 1, want: natskv.BatchStats{Singles: waiting}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("MinBatch=%d", tt.minBatch), func(t *testing.T) {
			var g *gate
			var log roundLog
			h := newHarness(t, func(cfg *Config) {
				cfg.MinBatch = tt.minBatch
				g = newGate(cfg)
				cfg.hooks.round = log.add
			})
			n := h.start("ns")
			first := make(chan error, 1)
			go func() { first <- n.ClaimContext(h.ctx(), "first", "h", time.Minute) }()
			<-g.entered
			g.received(t, h, n, 1)
			results := make(chan error, waiting)
			for i := range waiting {
				go func() { results <- n.ClaimContext(h.ctx(), fmt.Sprintf("l%d", i), fmt.Sprintf("h%d", i), time.Minute) }()
			}
			g.received(t, h, n, waiting)
			select {
			case err := <-results:
				t.Fatalf("a claim returned %v while the round before it was in flight", err)
			default:
			}
			close(g.open)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			for range waiting {
				if err := <-results; err != nil {
					t.Fatal(err)
				}
			}
			rounds := log.get()
			if len(rounds) != 2 || rounds[0] != (round{1, natskv.BatchStats{Singles: 1}}) || rounds[1] != (round{waiting, tt.want}) {
				t.Fatalf("rounds = %+v, want one write alone, then %d writes as %+v", rounds, waiting, tt.want)
			}
			out := h.outsider("ns")
			for i := range waiting {
				name, holder := fmt.Sprintf("l%d", i), fmt.Sprintf("h%d", i)
				if got := out.Leases()[name].Holder; got != holder {
					t.Errorf("%s held by %q in the store, want %q", name, got, holder)
				}
				h.mustHold(n, name, holder)
			}
		})
	}
}

// TestGroupCommitLostRace: another writer takes a lease the actor believes
// free while the actor's claim of it waits in a batch. The server refuses
// the batch; only that claim is decided again (and denied: the lease is
// held), the others are committed.
func TestGroupCommitLostRace(t *testing.T) {
	const waiting = 10
	var g *gate
	var log roundLog
	h := newHarness(t, func(cfg *Config) {
		cfg.MinBatch = 2
		g = newGate(cfg)
		cfg.hooks.round = log.add
	})
	n := h.start("ns")
	first := make(chan error, 1)
	go func() { first <- n.ClaimContext(h.ctx(), "first", "h", time.Minute) }()
	<-g.entered
	g.received(t, h, n, 1)
	results := make(map[string]chan error)
	for i := range waiting {
		name := fmt.Sprintf("l%d", i)
		ch := make(chan error, 1)
		results[name] = ch
		go func() { ch <- n.ClaimContext(h.ctx(), name, "me", time.Minute) }()
	}
	g.received(t, h, n, waiting)
	if err := h.outsider("ns").ClaimLease("l3", lease.Request{Holder: "them", Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for name, ch := range results {
		err := <-ch
		switch {
		case name == "l3" && !errors.Is(err, lease.ErrClaimDenied):
			t.Errorf("claim of the lease taken meanwhile: %v, want ErrClaimDenied", err)
		case name != "l3" && err != nil:
			t.Errorf("claim of %s: %v", name, err)
		}
	}
	if _, _, stats := log.totals(); stats.Refused != 1 || stats.Batches != 2 {
		t.Errorf("batches %+v, want 2 sent, 1 refused", stats)
	}
	if got := h.holderInStore("ns", "l3"); got != "them" {
		t.Errorf("l3 held by %q in the store, want them", got)
	}
	if got := h.holderInStore("ns", "l7"); got != "me" {
		t.Errorf("l7 held by %q in the store, want me", got)
	}
}

// TestConcurrentClaimsShareRoundTrips: many goroutines claim distinct
// leases at once; with group commit they take fewer store round trips than
// writes, and every claim holds, in the actor and in the store.
func TestConcurrentClaimsShareRoundTrips(t *testing.T) {
	const goroutines, each = 64, 8
	var g *gate
	var log roundLog
	h := newHarness(t, func(cfg *Config) {
		cfg.MinBatch = DefaultMinBatch
		g = newGate(cfg)
		cfg.hooks.round = log.add
	})
	n := h.start("ns")
	errs := make(chan error, goroutines)
	for gr := range goroutines {
		go func() {
			for i := range each {
				if err := n.ClaimContext(h.ctx(), fmt.Sprintf("l%d-%d", gr, i), fmt.Sprintf("h%d", gr), time.Minute); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	// Hold the first write until every goroutine's first claim waits
	// behind it: then at least one round is a batch, however the
	// scheduler runs the rest.
	<-g.entered
	g.received(t, h, n, goroutines)
	close(g.open)
	for range goroutines {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	writes, trips, stats := log.totals()
	if writes != goroutines*each {
		t.Fatalf("%d writes, want %d", writes, goroutines*each)
	}
	if trips >= writes || stats.Batches == 0 {
		t.Errorf("%d writes took %d round trips (%+v); want fewer, with batches", writes, trips, stats)
	}
	t.Logf("%d writes in %d round trips (%+v)", writes, trips, stats)
	held := h.outsider("ns").Leases()
	for gr := range goroutines {
		for i := range each {
			name, holder := fmt.Sprintf("l%d-%d", gr, i), fmt.Sprintf("h%d", gr)
			if held[name].Holder != holder {
				t.Fatalf("%s held by %q in the store, want %q", name, held[name].Holder, holder)
			}
		}
	}
}

// Writes decided behind a round stuck past maxRoundWait go out beside it,
// but together: a stuck round must not turn group commit into a round per
// write.
func TestWritesBesideAStuckRoundShareRounds(t *testing.T) {
	const claims = 64
	var entered <-chan struct{}
	release := make(chan struct{})
	slow := make(chan struct{}, 1)
	var log roundLog
	h := newHarness(t, func(cfg *Config) {
		cfg.MinBatch = DefaultMinBatch
		cfg.hooks.maxRoundWait = 5 * time.Millisecond
		entered = holdWrite(cfg, "stuck", release)
		cfg.hooks.round = log.add
		cfg.hooks.receive = func(_ string, msg any) {
			if _, ok := msg.(*roundSlow); ok {
				select {
				case slow <- struct{}{}:
				default:
				}
			}
		}
	})
	n := h.start("ns")
	stuck := make(chan error, 1)
	go func() { stuck <- n.ClaimContext(h.ctx(), "stuck", "h", time.Minute) }()
	<-entered
	<-slow // the actor now knows the round is stuck
	errs := make(chan error, claims)
	for i := range claims {
		go func() { errs <- n.ClaimContext(h.ctx(), fmt.Sprintf("l%d", i), "h", time.Minute) }()
	}
	for range claims {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rounds := len(log.get()) // the stuck round has not run yet
	close(release)
	if err := <-stuck; err != nil {
		t.Fatal(err)
	}
	if rounds > claims/4 {
		t.Fatalf("%d claims behind a stuck round went out in %d rounds; want a few", claims, rounds)
	}
	t.Logf("%d claims behind a stuck round went out in %d rounds", claims, rounds)
}

// With group commit, leases that expire together are expired in batches,
// not one write after another.
func TestExpiriesShareRounds(t *testing.T) {
	const leases = 64
	log := &roundLog{}
	h := newHarness(t, func(cfg *Config) {
		cfg.MinBatch = DefaultMinBatch
		cfg.hooks.round = log.add
	})
	n := h.start("ns")
	for i := range leases {
		h.claim(n, fmt.Sprintf("l%02d", i), "h", time.Minute)
		h.expectClaimed("ns", fmt.Sprintf("l%02d", i), "h")
	}
	before := len(log.get())
	h.clock.Advance(time.Minute + 1)
	for i := range leases {
		h.expectExpired("ns", fmt.Sprintf("l%02d", i), "h")
	}
	var largest int
	rounds := log.get()[before:]
	for _, r := range rounds {
		largest = max(largest, r.stats.Largest)
	}
	if largest < DefaultMinBatch || len(rounds) > leases/4 {
		t.Fatalf("%d expiries took %d rounds, the largest batch %d writes; want a few rounds of batches", leases, len(rounds), largest)
	}
}

// Without group commit, leases due together are expired in one round of
// concurrent single writes, and their events come in name order.
func TestDueLeasesExpireInOneRoundWithoutGroupCommit(t *testing.T) {
	var log roundLog
	h := newHarness(t, func(cfg *Config) { cfg.hooks.round = log.add })
	n := h.start("ns")
	for _, name := range []string{"e", "b", "d", "a", "c"} {
		h.claim(n, name, "h", time.Minute)
		h.expectClaimed("ns", name, "h")
	}
	before := len(log.get())
	h.clock.Advance(time.Minute + 1)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		h.expectExpired("ns", name, "h")
	}
	if rounds := log.get()[before:]; len(rounds) != 1 || rounds[0] != (round{5, natskv.BatchStats{Singles: 5}}) {
		t.Fatalf("expiry rounds %+v, want one of 5 single writes", rounds)
	}
}
