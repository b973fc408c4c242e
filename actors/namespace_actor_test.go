package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

func TestClaimFreeLease(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "redis", "unit/0", time.Minute)
	ev := h.expectClaimed("ns", "redis", "unit/0")
	if ev.GetDuration().AsDuration() != time.Minute || ev.GetRevision() == 0 {
		t.Fatalf("claimed event %v", ev)
	}
	h.mustHold(n, "redis", "unit/0")
	if got := h.holderInStore("ns", "redis"); got != "unit/0" {
		t.Fatalf("store holder %q", got)
	}
}

func TestClaimWhenStoreSaysAnotherHolder(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	if err := h.outsider("ns").ClaimLease("l", lease.Request{Holder: "other", Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	before := h.lastRevision()
	err := n.ClaimContext(h.ctx(), "l", "me", time.Minute)
	if !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim = %v, want ErrClaimDenied", err)
	}
	if after := h.lastRevision(); after != before {
		t.Fatalf("denied claim wrote to the store: %d -> %d", before, after)
	}
	if got := h.holderInStore("ns", "l"); got != "other" {
		t.Fatalf("store holder %q, want other", got)
	}
}

func TestExtendByHolder(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	h.clock.Advance(30 * time.Second)
	h.claim(n, "l", "h", time.Minute)
	leases, err := n.Leases(h.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leases["l"].Expiry, epoch.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("expiry %v, want %v", got, want)
	}
	h.expectClaimed("ns", "l", "h")
	h.noMoreEvents() // an extension is not a new holder
}

// An extension longer than the stored record is written, and so finds the
// record gone (an extension the record covers is not written: see
// TestExtensionTheRecordCoversWritesNothing).
func TestExtendAfterLeaseVanishedBecomesClaim(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	kv, err := h.js.KeyValue(context.Background(), natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), "ns.l"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second) // so that the claim extends
	h.claim(n, "l", "h", 2*time.Minute)
	if got := h.holderInStore("ns", "l"); got != "h" {
		t.Fatalf("store holder %q, want h", got)
	}
	first, second := h.expectClaimed("ns", "l", "h"), h.expectClaimed("ns", "l", "h")
	if second.GetRevision() <= first.GetRevision() {
		t.Fatalf("new tenure's fencing token %d not above %d", second.GetRevision(), first.GetRevision())
	}
}

// An extension no longer than the stored record's duration moves the
// expiry in the actor and writes nothing; a longer one is written.
func TestExtensionTheRecordCoversWritesNothing(t *testing.T) {
	for _, c := range []struct {
		name   string
		extend time.Duration
		writes bool
	}{
		{"same duration", time.Minute, false},
		{"shorter", 30 * time.Second, false},
		{"longer", 2 * time.Minute, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			n := h.start("ns")
			h.claim(n, "l", "h", time.Minute)
			before := h.lastRevision()
			h.clock.Advance(45 * time.Second)
			h.claim(n, "l", "h", c.extend)
			if wrote := h.lastRevision() != before; wrote != c.writes {
				t.Fatalf("extension for %v wrote %v, want %v", c.extend, wrote, c.writes)
			}
			leases, err := n.Leases(h.ctx())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := leases["l"].Expiry, epoch.Add(45*time.Second+c.extend); !got.Equal(want) {
				t.Fatalf("expiry %v, want %v", got, want)
			}
		})
	}
}

// An extension kept in memory still binds after the Manager is gone: a new
// Manager loads the record and, by the clock rule, gives the holder its
// full duration from the load, which is later than the extension.
func TestUnwrittenExtensionHoldsAcrossRestart(t *testing.T) {
	h := newHarness(t)
	h.claim(h.start("ns"), "l", "h", time.Minute)
	h.clock.Advance(50 * time.Second)
	h.claim(h.m.Namespace("ns"), "l", "h", time.Minute) // held until 1m50s
	if err := h.m.Stop(h.ctx()); err != nil {
		t.Fatal(err)
	}

	m, err := New(context.Background(), Config{Conn: h.nc, Clock: h.clock, MaxSleep: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	n := m.Namespace("ns")
	if _, err := n.Leases(h.ctx()); err != nil { // loaded at 50s
		t.Fatal(err)
	}
	h.clock.Advance(59 * time.Second) // 1m49s
	if err := n.ClaimContext(h.ctx(), "l", "other", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by other 1s before the extension ends = %v, want ErrClaimDenied", err)
	}
	h.mustHold(n, "l", "h")
}

func TestOtherHolderDeniedWithoutWrite(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "a", time.Minute)
	before := h.lastRevision()
	if err := n.ClaimContext(h.ctx(), "l", "b", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by b = %v, want ErrClaimDenied", err)
	}
	if after := h.lastRevision(); after != before {
		t.Fatalf("denied claim wrote: %d -> %d", before, after)
	}
}

func TestExpiredHolderIsReplacedAtOnce(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "a", time.Minute)
	h.expectClaimed("ns", "l", "a")
	// Past a's expiry, but before the actor's timer has done anything:
	// the claim expires a and claims for b in one call.
	h.clock.Set(epoch.Add(time.Minute + 1))
	h.claim(n, "l", "b", time.Minute)
	h.expectExpired("ns", "l", "a")
	h.expectClaimed("ns", "l", "b")
}

func TestCheckHitDoesNotReload(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	h.mustHold(n, "l", "h")
	select {
	case <-h.loads:
		t.Fatal("a check hit reloaded the namespace")
	default:
	}
}

func TestCheckMissReloadsOnce(t *testing.T) {
	tests := []struct {
		name    string
		outside string // holder claimed through another client
		holder  string // holder checked
		held    bool
	}{
		{"then succeeds", "h", "h", true},
		{"then not held", "other", "h", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			n := h.start("ns")
			if err := h.outsider("ns").ClaimLease("l", lease.Request{Holder: tt.outside, Duration: time.Minute}); err != nil {
				t.Fatal(err)
			}
			if tt.held {
				h.mustHold(n, "l", tt.holder)
			} else {
				h.mustNotHold(n, "l", tt.holder)
			}
			h.awaitLoad()
			select {
			case <-h.loads:
				t.Fatal("a check miss reloaded more than once")
			default:
			}
		})
	}
}

// unreadable is a store whose reloads fail while broken is set.
type unreadable struct {
	store
	broken *atomic.Bool
}

func (s unreadable) LoadChanges(ctx context.Context, since uint64) (*natskv.Snapshot, error) {
	if s.broken.Load() {
		return nil, errors.New("store unreachable")
	}
	return s.store.LoadChanges(ctx, since)
}

func TestCheckMissThatCannotReloadIsUnavailable(t *testing.T) {
	var broken atomic.Bool
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.newStore = func(ns string, b *natskv.Bucket) (store, error) {
			c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: ns, Clock: cfg.Clock})
			return unreadable{store: c, broken: &broken}, err
		}
	})
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	broken.Store(true)
	// Another process may have given the lease to "other" meanwhile: a
	// miss the actor cannot refresh is not an answer.
	err := n.Token("l", "other").(*Token).CheckContext(h.ctx(), nil)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("check miss without a reload = %v, want ErrUnavailable", err)
	}
	broken.Store(false)
	h.mustNotHold(n, "l", "other")
}

func TestCheckTrapdoorGivesFence(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	token := h.expectClaimed("ns", "l", "h").GetRevision()
	var f natskv.Fence
	if err := n.Token("l", "h").Check(&f); err != nil {
		t.Fatal(err)
	}
	if f.Revision != token || f.Key != "ns.l" {
		t.Fatalf("fence %+v, want revision %d of ns.l", f, token)
	}
	if err := n.Token("l", "h").Check("not a key"); err == nil {
		t.Fatal("Check with an unsupported key = nil")
	}
}

func TestStartupExpiresLeasePastExpiry(t *testing.T) {
	var pre *natskv.Client
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.newStore = func(ns string, b *natskv.Bucket) (store, error) { return pre, nil }
	})
	// A store that saw the lease claimed a minute and more ago, as a
	// namespace restarting in the same process has.
	pre = h.outsider("ns")
	if err := pre.ClaimLease("l", lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	h.clock.Set(epoch.Add(time.Minute + time.Second))
	if _, err := h.m.Namespace("ns").Leases(h.ctx()); err != nil {
		t.Fatal(err)
	}
	h.expectExpired("ns", "l", "h")
	if got := h.holderInStore("ns", "l"); got != "" {
		t.Fatalf("store holder %q after startup expiry", got)
	}
}

func TestNothingExpiresBeforeItsTime(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) { registered = waitRegistrations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	h.expectClaimed("ns", "l", "h")
	done := h.waitAsync(n, "l", registered)

	h.clock.Advance(time.Minute)
	h.mustHold(n, "l", "h")
	if got := h.holderInStore("ns", "l"); got != "h" {
		t.Fatalf("store holder %q at exactly expiry", got)
	}
	expectBlocked(t, done)
	h.noMoreEvents()

	h.clock.Advance(1)
	h.expectExpired("ns", "l", "h")
	expectDone(t, done)
	h.mustNotHold(n, "l", "h")
}

func TestLeaseGrantedLongerIsNotExpiredEarly(t *testing.T) {
	h := newHarness(t)
	if err := h.outsider("ns").ClaimLease("l", lease.Request{Holder: "h", Duration: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	n := h.start("ns")
	// Already held for longer. The first extension of a record the actor
	// did not write is written all the same (to move the revision), for
	// the time the lease already has; the next needs no write.
	h.claim(n, "l", "h", time.Minute)
	before := h.lastRevision()
	h.claim(n, "l", "h", time.Minute)
	if after := h.lastRevision(); after != before {
		t.Fatalf("claim that needed no extension wrote: %d -> %d", before, after)
	}
	h.clock.Advance(time.Minute + 1)
	h.mustHold(n, "l", "h")
	h.clock.Advance(4 * time.Minute)
	h.expectExpired("ns", "l", "h")
}

// Without group commit expiries run one at a time; with it they are all in
// flight at once, in rounds applied in order. Either way they end in name
// order.
func TestLeasesExpireInNameOrderSkippingLostRaces(t *testing.T) {
	for _, minBatch := range []int{0, DefaultMinBatch} {
		t.Run(fmt.Sprintf("MinBatch=%d", minBatch), func(t *testing.T) {
			h := newHarness(t, func(cfg *Config) { cfg.MinBatch = minBatch })
			n := h.start("ns")
			for _, name := range []string{"c", "a", "b", "d"} {
				h.claim(n, name, "h", time.Minute)
				h.expectClaimed("ns", name, "h")
			}
			// Another writer extends b: the actor's expiry of b will lose.
			out := h.outsider("ns")
			if err := out.ExtendLease("b", lease.Request{Holder: "h", Duration: time.Hour}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Minute + 1)
			for _, name := range []string{"a", "c", "d"} {
				h.expectExpired("ns", name, "h")
			}
			h.mustHold(n, "b", "h")
			h.noMoreEvents()
		})
	}
}

func TestWaitOnFreeLeaseReturnsAtOnce(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	if err := n.WaitUntilExpiredContext(h.ctx(), "free"); err != nil {
		t.Fatal(err)
	}
}

func TestWaitStaysBlockedWhenExpiryLosesToNewHolder(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) { registered = waitRegistrations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	done := h.waitAsync(n, "l", registered)

	// Behind the actor's back the lease changes hands: h gives it up and
	// h2 claims it for an hour, before the actor's expiry of h's record.
	out := h.outsider("ns")
	if err := out.ReleaseLeaseContext(context.Background(), "l", "h"); err != nil {
		t.Fatal(err)
	}
	if err := out.ClaimLease("l", lease.Request{Holder: "h2", Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	h.drainLoads()
	h.clock.Advance(time.Minute + 1)
	h.awaitLoad() // the actor reloads after its expiry attempts
	expectBlocked(t, done)
	h.mustHold(n, "l", "h2")

	// The actor first saw h2's record at the failed expiry: it expires an
	// hour after that.
	h.clock.Advance(time.Hour)
	h.mustHold(n, "l", "h2")
	h.clock.Advance(1)
	expectDone(t, done)
}

func TestWaitersWakeOnlyForTheirLease(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) { registered = waitRegistrations(cfg) })
	n := h.start("ns")
	h.claim(n, "short", "h", time.Minute)
	h.claim(n, "long", "h", 2*time.Minute)
	short, long := h.waitAsync(n, "short", registered), h.waitAsync(n, "long", registered)
	h.drainLoads()
	h.clock.Advance(time.Minute + 1)
	expectDone(t, short)
	expectBlocked(t, long)
	h.clock.Advance(time.Minute)
	expectDone(t, long)
}

func TestWaitCancelReturnsContextError(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) { registered = waitRegistrations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.WaitUntilExpiredContext(ctx, "l") }()
	<-registered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v, want context.Canceled", err)
	}
}

func TestReleaseWakesWaitersAndPublishes(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) { registered = waitRegistrations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	claimed := h.expectClaimed("ns", "l", "h")
	done := h.waitAsync(n, "l", registered)
	if err := n.Release(h.ctx(), "l", "h"); err != nil {
		t.Fatalf("release: %v", err)
	}
	expectDone(t, done)
	if ev := h.expectExpired("ns", "l", "h"); ev.GetRevision() != claimed.GetRevision() {
		t.Fatalf("expired event revision %d, want the tenure's %d", ev.GetRevision(), claimed.GetRevision())
	}
	if got := h.holderInStore("ns", "l"); got != "" {
		t.Fatalf("store holder %q after release", got)
	}
}

func TestReleaseByNonHolderIsNotHeld(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	before := h.lastRevision()
	for _, holder := range []string{"other"} {
		if err := n.Release(h.ctx(), "l", holder); !errors.Is(err, lease.ErrNotHeld) {
			t.Fatalf("release by %q = %v, want ErrNotHeld", holder, err)
		}
	}
	if err := n.Release(h.ctx(), "free", "h"); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("release of a free lease = %v, want ErrNotHeld", err)
	}
	if after := h.lastRevision(); after != before {
		t.Fatalf("failed release wrote: %d -> %d", before, after)
	}
	h.mustHold(n, "l", "h")
}

// A lease released long enough ago that the server has removed its delete
// marker is claimed again at once: the namespace still expects the marker,
// finds its write refused, reads that the key is gone and claims again,
// at a revision above every earlier tenure's.
func TestClaimAfterTheDeleteMarkerWent(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.DeleteMarkerTTL = time.Second })
	n := h.start("ns")
	h.claim(n, "l", "h1", time.Minute)
	first := h.expectClaimed("ns", "l", "h1")
	if err := n.Release(h.ctx(), "l", "h1"); err != nil {
		t.Fatal(err)
	}
	h.expectExpired("ns", "l", "h1")
	stream, err := h.js.Stream(h.ctx(), "KV_"+natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The server removes the marker on its own clock and tells nobody:
	// look every 20 ms.
	for deadline := time.Now().Add(patience); ; time.Sleep(20 * time.Millisecond) {
		_, err := stream.GetLastMsgForSubject(h.ctx(), "$KV."+natskv.DefaultBucket+".ns.l")
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("the marker of ns/l is still there (%v)", err)
		}
	}
	h.claim(n, "l", "h2", time.Minute)
	if again := h.expectClaimed("ns", "l", "h2"); again.GetRevision() <= first.GetRevision() {
		t.Fatalf("claimed again at revision %d, want more than the first tenure's %d", again.GetRevision(), first.GetRevision())
	}
}

func TestSameLeaseInTwoNamespaces(t *testing.T) {
	h := newHarness(t)
	a, b := h.start("ns-a"), h.start("ns-b")
	h.claim(a, "l", "ha", time.Minute)
	h.claim(b, "l", "hb", 2*time.Minute)
	h.mustHold(a, "l", "ha")
	h.mustHold(b, "l", "hb")
	h.mustNotHold(a, "l", "hb")
	h.clock.Advance(time.Minute + 1)
	h.expectClaimed("ns-a", "l", "ha")
	h.expectClaimed("ns-b", "l", "hb")
	h.expectExpired("ns-a", "l", "ha")
	h.mustHold(b, "l", "hb")
}

// Without group commit (MinBatch 0, the default) every write goes out as
// soon as it is decided; with it, writes wait for the round in flight, but
// only for maxRoundWait when that round is stuck.
func TestSlowWriteDoesNotDelayOtherLeases(t *testing.T) {
	for _, minBatch := range []int{0, DefaultMinBatch} {
		t.Run(fmt.Sprintf("MinBatch=%d", minBatch), func(t *testing.T) {
			var entered <-chan struct{}
			release := make(chan struct{})
			h := newHarness(t, func(cfg *Config) {
				cfg.MinBatch = minBatch
				entered = holdWrite(cfg, "slow", release)
			})
			n := h.start("ns")
			slow := make(chan error, 1)
			go func() { slow <- n.ClaimContext(h.ctx(), "slow", "h", time.Minute) }()
			<-entered
			h.claim(n, "fast", "h", time.Minute)
			h.mustHold(n, "fast", "h")
			select {
			case err := <-slow:
				t.Fatalf("slow claim returned %v before its write finished", err)
			default:
			}
			close(release)
			if err := <-slow; err != nil {
				t.Fatalf("slow claim: %v", err)
			}
			h.mustHold(n, "slow", "h")
		})
	}
}

func TestWritesForOneLeaseStayInOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.runWrite = func(ctx context.Context, w *natskv.Write) {
			mu.Lock()
			order = append(order, w.Holder())
			mu.Unlock()
			w.Run(ctx)
		}
	})
	n := h.start("ns")
	h.claim(n, "l", "a", time.Minute)
	// Release by a and claim by b, sent back to back: b must wait for the
	// release to land, then win.
	rel, cl := make(chan error, 1), make(chan error, 1)
	go func() { rel <- n.Release(h.ctx(), "l", "a") }()
	if err := <-rel; err != nil {
		t.Fatal(err)
	}
	go func() { cl <- n.ClaimContext(h.ctx(), "l", "b", time.Minute) }()
	if err := <-cl; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "a,a,b" {
		t.Fatalf("writes ran in order %v", order)
	}
}

func TestPanicInNamespaceActorIsSurvived(t *testing.T) {
	var once sync.Once
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.receive = func(_ string, msg any) {
			if m, ok := msg.(*claimRequest); ok && m.lease == "boom" {
				once.Do(func() { panic("boom") })
			}
		}
	})
	n := h.start("ns")
	h.claim(n, "kept", "h", time.Minute)
	h.expectClaimed("ns", "kept", "h")

	err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
	}
	// The restarted actor serves, with the state it had.
	h.mustHold(n, "kept", "h")
	h.claim(n, "boom", "h", time.Minute)
	if err := n.ClaimContext(h.ctx(), "kept", "other", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim of a lease held before the crash = %v, want ErrClaimDenied", err)
	}
	// And it still expires leases.
	h.expectClaimed("ns", "boom", "h")
	h.clock.Advance(time.Minute + 1)
	h.expectExpired("ns", "boom", "h")
	h.expectExpired("ns", "kept", "h")
}

// recordLog is a slog handler that keeps the records it is given.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *recordLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordLog) WithGroup(string) slog.Handler      { return l }

// errorsWith returns the messages of the records at error level that have
// an attribute key whose value contains want.
func (l *recordLog) errorsWith(key, want string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var msgs []string
	for _, r := range l.records {
		r.Attrs(func(a slog.Attr) bool {
			if r.Level >= slog.LevelError && a.Key == key && strings.Contains(a.Value.String(), want) {
				msgs = append(msgs, r.Message)
				return false
			}
			return true
		})
	}
	return msgs
}

// The panic that restarted a namespace actor is logged at error, with its
// value and where it happened: the operator's alert on
// leaseagent_actor_restarts_total sends them to the logs for it.
func TestPanicInNamespaceActorIsLogged(t *testing.T) {
	var once sync.Once
	logs := &recordLog{}
	h := newHarness(t, func(cfg *Config) {
		cfg.Logger = slog.New(logs)
		cfg.hooks.receive = func(_ string, msg any) {
			if m, ok := msg.(*claimRequest); ok && m.lease == "boom" {
				once.Do(func() { panic("kaboom-42") })
			}
		}
	})
	n := h.start("ns")
	if err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
	}
	if msgs := logs.errorsWith("panic", "kaboom-42"); len(msgs) == 0 {
		t.Errorf("no error logged with the panic's value")
	}
	if msgs := logs.errorsWith("stack", "TestPanicInNamespaceActorIsLogged"); len(msgs) == 0 {
		t.Errorf("no error logged with the panic's stack")
	}
}

// crashOnClaim is a store whose PrepareClaim of lease "boom" panics and
// whose first Load waits for gate.
type crashOnClaim struct {
	store
	gate chan struct{}
	once sync.Once
}

func (s *crashOnClaim) PrepareClaim(name string, r lease.Request) (*natskv.Write, error) {
	if name == "boom" {
		panic("boom")
	}
	return s.store.PrepareClaim(name, r)
}

func (s *crashOnClaim) Load(ctx context.Context) (*natskv.Snapshot, error) {
	s.once.Do(func() { <-s.gate })
	return s.store.Load(ctx)
}

func TestCrashWhileServingEarlyRequestsFailsTheRest(t *testing.T) {
	gate := make(chan struct{})
	queued := make(chan struct{}, 2)
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.newStore = func(ns string, b *natskv.Bucket) (store, error) {
			c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: ns, Clock: cfg.Clock})
			return &crashOnClaim{store: c, gate: gate}, err
		}
		cfg.hooks.receive = func(_ string, msg any) {
			if _, ok := msg.(*claimRequest); ok {
				queued <- struct{}{}
			}
		}
	})
	n := h.m.Namespace("ns")
	// Both claims arrive before the first load has landed, in this order.
	results := map[string]chan error{"boom": make(chan error, 1), "other": make(chan error, 1)}
	for _, name := range []string{"boom", "other"} {
		go func() { results[name] <- n.ClaimContext(h.ctx(), name, "h", time.Minute) }()
		<-queued
	}
	close(gate)
	for name, ch := range results {
		if err := <-ch; !errors.Is(err, ErrUnavailable) {
			t.Errorf("claim of %q, queued before the crash = %v, want ErrUnavailable", name, err)
		}
	}
}

// A write's outcome that comes back to the actor after it restarted, and
// after the lease has changed hands since, puts nothing back.
func TestAnOutcomeFromBeforeARestartDoesNotUndoLaterClaims(t *testing.T) {
	landed, release := make(chan struct{}), make(chan struct{})
	outcome := make(chan struct{})
	var crash, heard sync.Once
	var writesOfX atomic.Int32
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.runWrite = func(ctx context.Context, w *natskv.Write) {
			w.Run(ctx)
			if w.Lease() == "x" && writesOfX.Add(1) == 1 {
				close(landed) // the first claim of x lands; its outcome waits
				<-release
			}
		}
		cfg.hooks.receive = func(_ string, msg any) {
			switch m := msg.(type) {
			case *claimRequest:
				if m.lease == "boom" {
					crash.Do(func() { panic("boom") })
				}
			case *roundDone:
				if m.incarnation == 1 && m.writes[0].write.Lease() == "x" {
					heard.Do(func() { close(outcome) })
				}
			}
		}
	})
	n := h.start("ns")
	first := make(chan error, 1)
	go func() { first <- n.ClaimContext(h.ctx(), "x", "a", time.Hour) }()
	<-landed
	if err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
	}
	if err := <-first; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim lost in the crash = %v, want ErrUnavailable", err)
	}
	h.claim(n, "x", "a", time.Hour) // a tries again: it holds x
	if err := n.Release(h.ctx(), "x", "a"); err != nil {
		t.Fatal(err)
	}
	h.claim(n, "x", "b", time.Hour)
	close(release)
	<-outcome
	// Requests from now on are handled after the old outcome. (A check of
	// b first would refresh the cache on a miss, and hide a stale a.)
	h.mustNotHold(n, "x", "a")
	h.mustHold(n, "x", "b")
	if err := n.ClaimContext(h.ctx(), "x", "b", time.Hour); err != nil {
		t.Fatalf("b extending x after the old outcome = %v", err)
	}
}

// A namespace actor that panics more than maxRestarts times stops; the
// requests it has then, the one that crashed it and those in its mailbox,
// fail with ErrUnavailable (none is lost), and the next starts a new actor.
func TestActorFailingTooOftenAnswersItsRequestsAndStops(t *testing.T) {
	crashing, crash := make(chan struct{}), make(chan struct{})
	var booms atomic.Int32
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.receive = func(_ string, msg any) {
			if m, ok := msg.(*claimRequest); ok && m.lease == "boom" {
				if booms.Add(1) == maxRestarts+1 {
					close(crashing)
					<-crash
				}
				panic("boom")
			}
		}
	})
	n := h.start("ns")
	for range maxRestarts {
		if err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
		}
	}
	last := make(chan error, 1)
	go func() { last <- n.ClaimContext(h.ctx(), "boom", "h", time.Minute) }()
	<-crashing
	// Queued behind the last crash: ClaimFunc returns once it is in the
	// mailbox. Its deadline is far: only the actor may answer it.
	queued := make(chan error, 1)
	n.ClaimFunc(time.Now().Add(time.Hour), "l", "h", time.Minute, func(err error) { queued <- err })
	close(crash)
	for _, c := range []struct {
		name string
		ch   <-chan error
	}{{"queued claim", queued}, {"crashing claim", last}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s = %v, want ErrUnavailable", c.name, err)
			}
		case <-time.After(patience):
			t.Fatalf("%s never answered", c.name)
		}
	}
	if h.m.Serving("ns") {
		t.Fatal("ns still served after too many failures")
	}
	h.claim(n, "l", "h", time.Minute)
}

func TestStopFailsPendingCalls(t *testing.T) {
	var registered <-chan string
	var entered <-chan struct{}
	h := newHarness(t, func(cfg *Config) {
		registered = waitRegistrations(cfg)
		entered = holdWrite(cfg, "stuck", nil) // until Stop abandons it
	})
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	wait := h.waitAsync(n, "l", registered)
	stuck := make(chan error, 1)
	go func() { stuck <- n.ClaimContext(context.Background(), "stuck", "h", time.Minute) }()
	<-entered

	if err := h.m.Stop(h.ctx()); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan error{"wait": wait, "claim": stuck} {
		if err := <-ch; !errors.Is(err, ErrStopped) {
			t.Fatalf("pending %s = %v, want ErrStopped", name, err)
		}
	}
	if err := n.ClaimContext(h.ctx(), "l", "h", time.Minute); !errors.Is(err, ErrStopped) {
		t.Fatalf("claim after Stop = %v, want ErrStopped", err)
	}
}

func TestMaxSleepReloadsAndWakesWaiters(t *testing.T) {
	var registered <-chan string
	h := newHarness(t, func(cfg *Config) {
		registered = waitRegistrations(cfg)
		cfg.MaxSleep = time.Minute
	})
	out := h.outsider("ns")
	if err := out.ClaimLease("l", lease.Request{Holder: "other", Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	n := h.start("ns")
	done := h.waitAsync(n, "l", registered)
	// The other writer releases it; nobody tells the actor.
	if err := out.ReleaseLeaseContext(context.Background(), "l", "other"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	expectDone(t, done)
}

// loadStarts reports each store read a namespace actor starts: true for
// the whole namespace, false for the changes.
func loadStarts(cfg *Config) <-chan bool {
	starts := make(chan bool, 100)
	cfg.hooks.loadStarted = func(_ string, full bool) { starts <- full }
	return starts
}

// noLoadStarted fails if a store read was started.
func noLoadStarted(t *testing.T, starts <-chan bool, when string) {
	t.Helper()
	select {
	case full := <-starts:
		t.Fatalf("%s: a load started (whole namespace: %v)", when, full)
	default:
	}
}

// The timer set for a lease that was extended since fires with nothing due:
// it is set again, and the namespace is not read. Nor is it after an
// expiry that lost no race.
func TestTimerForExtendedLeaseReadsNothing(t *testing.T) {
	var starts <-chan bool
	h := newHarness(t, func(cfg *Config) { starts = loadStarts(cfg) })
	n := h.start("ns")
	<-starts // the first load
	h.claim(n, "l", "h", time.Minute)
	h.expectClaimed("ns", "l", "h")
	h.clock.Advance(30 * time.Second)
	h.claim(n, "l", "h", time.Minute) // expires at 1m30s now
	h.clock.Advance(31 * time.Second) // the timer set for 1m fires
	h.mustHold(n, "l", "h")           // the actor has handled the tick
	noLoadStarted(t, starts, "tick with nothing due")
	h.clock.Advance(30 * time.Second)
	h.expectExpired("ns", "l", "h")
	if leases, err := n.Leases(h.ctx()); err != nil || len(leases) != 0 { // the actor is past the expiry
		t.Fatalf("leases after the expiry: %v, err %v", leases, err)
	}
	noLoadStarted(t, starts, "expiry that lost no race")
}

// An expiry that lost a race to another writer reads what changed in the
// namespace; only the MaxSleep safety net reads the whole of it.
func TestLostExpiryReadsChangesAndMaxSleepReadsAll(t *testing.T) {
	var starts <-chan bool
	h := newHarness(t, func(cfg *Config) {
		starts = loadStarts(cfg)
		cfg.MaxSleep = time.Minute
	})
	n := h.start("ns")
	<-starts
	h.claim(n, "l", "h", 20*time.Second)
	h.expectClaimed("ns", "l", "h")
	// Another writer renews it; nobody tells the actor.
	out := h.outsider("ns")
	if err := out.ExtendLease("l", lease.Request{Holder: "h", Duration: 40 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(21 * time.Second) // the actor's expiry write is refused
	if full := <-starts; full {
		t.Fatal("after a lost expiry the whole namespace was read, want only the changes")
	}
	h.mustHold(n, "l", "h")
	h.clock.Advance(39 * time.Second)
	if full := <-starts; !full {
		t.Fatal("MaxSleep after the first load, only the changes were read, want the whole namespace")
	}
}

func TestEventSubjectsEscapeNames(t *testing.T) {
	h := newHarness(t)
	n := h.start("app/one")
	h.claim(n, "unit:0", "u/0", time.Minute)
	ev := h.nextEvent()
	if ev.subject != "lease.claimed.app=2Fone.unit=3A0" {
		t.Fatalf("subject %q", ev.subject)
	}
	if ev.claimed.GetNamespace() != "app/one" || ev.claimed.GetLease() != "unit:0" {
		t.Fatalf("payload %v does not carry the names as given", ev.claimed)
	}
}

// With Config.Interest, an event that would reach nobody is not published.
func TestEventsNobodyWouldReceiveAreNotPublished(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Interest = func(subject string) bool { return !strings.HasSuffix(subject, ".unheard") }
	})
	n := h.start("ns")
	// Events go out in order: had the first been sent, it would come first.
	h.claim(n, "unheard", "h", time.Minute)
	h.claim(n, "heard", "h", time.Minute)
	h.expectClaimed("ns", "heard", "h")
	for _, name := range []string{"unheard", "heard"} {
		if err := n.Release(h.ctx(), name, "h"); err != nil {
			t.Fatal(err)
		}
	}
	h.expectExpired("ns", "heard", "h")
}

func TestBadArgumentsChangeNothing(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	long := strings.Repeat("x", natskv.MaxNameBytes+1)
	before := h.lastRevision()
	tests := []struct {
		name string
		call func() error
	}{
		{"empty lease", func() error { return n.ClaimContext(h.ctx(), "", "h", time.Minute) }},
		{"lease with dot", func() error { return n.ClaimContext(h.ctx(), "a.b", "h", time.Minute) }},
		{"long lease", func() error { return n.ClaimContext(h.ctx(), long, "h", time.Minute) }},
		{"bad holder", func() error { return n.ClaimContext(h.ctx(), "l", "a b", time.Minute) }},
		{"zero duration", func() error { return n.ClaimContext(h.ctx(), "l", "h", 0) }},
		{"negative duration", func() error { return n.ClaimContext(h.ctx(), "l", "h", -time.Second) }},
		{"absurd duration", func() error { return n.ClaimContext(h.ctx(), "l", "h", DefaultMaxDuration+1) }},
		{"bad namespace", func() error { return h.m.Namespace("a b").ClaimContext(h.ctx(), "l", "h", time.Minute) }},
		{"invalid UTF-8 namespace", func() error { _, err := h.m.Namespace("\xff").Leases(h.ctx()); return err }},
		{"check bad lease", func() error { return n.Token("a$", "h").Check(nil) }},
		{"wait bad lease", func() error { return n.WaitUntilExpired("#") }},
		{"release bad holder", func() error { return n.Release(h.ctx(), "l", "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if after := h.lastRevision(); after != before {
		t.Fatalf("bad arguments wrote: %d -> %d", before, after)
	}
	h.claim(n, "l", "h", time.Minute) // and the manager still serves
}

func TestConfigValidate(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no conn", Config{}, "Config.Conn"},
		{"bad prefix", Config{Conn: h.nc, Prefix: "lease.>"}, "Config.Prefix"},
		{"empty prefix token", Config{Conn: h.nc, Prefix: "a..b"}, "Config.Prefix"},
		{"negative max sleep", Config{Conn: h.nc, MaxSleep: -1}, "Config.MaxSleep"},
		{"negative max duration", Config{Conn: h.nc, MaxDuration: -1}, "Config.MaxDuration"},
		{"negative retries", Config{Conn: h.nc, ClaimRetries: -1}, "Config.ClaimRetries"},
		{"negative write timeout", Config{Conn: h.nc, WriteTimeout: -1}, "Config.WriteTimeout"},
		{"drift", Config{Conn: h.nc, ClockDriftRate: 2}, "Config.ClockDriftRate"},
		{"bucket", Config{Conn: h.nc, Bucket: "a.b"}, "BucketConfig.Name"},
		{"replicas", Config{Conn: h.nc, Replicas: 9}, "BucketConfig.Replicas"},
		{"delete marker TTL", Config{Conn: h.nc, DeleteMarkerTTL: time.Millisecond}, "BucketConfig.DeleteMarkerTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("New: err = %v, want one naming %s", err, tt.field)
			}
		})
	}
}

func TestLeaseReportsHolderUntilExpiry(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	info, held, err := n.Lease(h.ctx(), "l")
	if err != nil || !held || info.Holder != "h" || !info.Expiry.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("Lease = %+v, %v, %v; want held by h until %v", info, held, err, epoch.Add(time.Minute))
	}
	h.clock.Set(epoch.Add(time.Minute + 1)) // past expiry, not yet expired
	if _, held, err := n.Lease(h.ctx(), "l"); err != nil || held {
		t.Fatalf("Lease past expiry: held %v, err %v; want not held", held, err)
	}
	if _, held, err := n.Lease(h.ctx(), "free"); err != nil || held {
		t.Fatalf("Lease of a free lease: held %v, err %v", held, err)
	}
}

// guard is a write guard a test opens and closes; asked receives the
// namespace each time the guard is asked while closed.
type guard struct {
	open  atomic.Bool
	asked chan string
}

func newGuard(m *Manager) *guard {
	g := &guard{asked: make(chan string, 100)}
	g.open.Store(true)
	m.SetWriteGuard(func(ns string) bool {
		if g.open.Load() {
			return true
		}
		select {
		case g.asked <- ns:
		default:
		}
		return false
	})
	return g
}

func TestWriteGuardRefusesClaimsAndReleases(t *testing.T) {
	h := newHarness(t)
	g := newGuard(h.m)
	n := h.start("ns")
	h.claim(n, "held", "h", time.Minute)
	g.open.Store(false)
	before := h.lastRevision()
	if err := n.ClaimContext(h.ctx(), "free", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim behind a closed guard = %v, want ErrUnavailable", err)
	}
	if err := n.Release(h.ctx(), "held", "h"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("release behind a closed guard = %v, want ErrUnavailable", err)
	}
	if after := h.lastRevision(); after != before {
		t.Fatalf("writes behind a closed guard: revision %d -> %d", before, after)
	}
	h.mustHold(n, "held", "h")
}

func TestWriteGuardRefusesExtensionsKeptInMemory(t *testing.T) {
	h := newHarness(t)
	g := newGuard(h.m)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	g.open.Store(false)
	h.clock.Advance(30 * time.Second)
	// A renewal for the record's duration writes nothing, but it promises
	// time that a new owner, counting from its own load, would not honour.
	if err := n.ClaimContext(h.ctx(), "l", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("renewal behind a closed guard = %v, want ErrUnavailable", err)
	}
	info, _, err := n.Lease(h.ctx(), "l")
	if err != nil || !info.Expiry.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("expiry after a refused renewal = %v (%v), want %v", info.Expiry, err, epoch.Add(time.Minute))
	}
}

func TestWriteGuardHoldsExpiriesBack(t *testing.T) {
	h := newHarness(t)
	g := newGuard(h.m)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	h.expectClaimed("ns", "l", "h")
	g.open.Store(false)
	h.clock.Advance(time.Minute + time.Second)
	select {
	case ns := <-g.asked:
		if ns != "ns" {
			t.Fatalf("guard asked for %q", ns)
		}
	case <-time.After(patience):
		t.Fatal("the due expiry never asked the guard")
	}
	if _, err := n.Leases(h.ctx()); err != nil { // the tick has been handled
		t.Fatal(err)
	}
	h.noMoreEvents()
	if got := h.holderInStore("ns", "l"); got != "h" {
		t.Fatalf("store holder %q behind a closed guard, want h", got)
	}
	g.open.Store(true)
	h.clock.Advance(guardedRetry)
	h.expectExpired("ns", "l", "h")
}
