package natskv_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
)

func req(holder string, d time.Duration) lease.Request {
	return lease.Request{Holder: holder, Duration: d}
}

// mustHold fails the test unless c's cache says holder holds name until
// expiry.
func mustHold(t *testing.T, c *natskv.Client, name, holder string, expiry time.Time) {
	t.Helper()
	info, ok := c.Leases()[name]
	if !ok {
		t.Fatalf("lease %q not in cache; want held by %q", name, holder)
	}
	if info.Holder != holder || !info.Expiry.Equal(expiry) {
		t.Fatalf("lease %q = holder %q expiry %v; want %q until %v", name, info.Holder, info.Expiry, holder, expiry)
	}
}

func mustBeInvalid(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, lease.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func fence(t *testing.T, c *natskv.Client, name string) uint64 {
	t.Helper()
	f, ok := c.Fence(name)
	if !ok {
		t.Fatalf("lease %q not held", name)
	}
	return f
}

func TestClaimFreeLease(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("redis", req("unit/0", time.Minute)); err != nil {
		t.Fatalf("ClaimLease: %v", err)
	}
	mustHold(t, c, "redis", "unit/0", epoch.Add(time.Minute))
	// The record is in the store: a fresh Client sees it.
	mustHold(t, s.client(t, "ns", clock), "redis", "unit/0", epoch.Add(time.Minute))
}

func TestClaimHeldLease(t *testing.T) {
	for _, holder := range []string{"other", "winner"} {
		t.Run(holder, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			winner, loser := s.client(t, "ns", clock), s.client(t, "ns", clock)
			if err := winner.ClaimLease("l", req("winner", time.Minute)); err != nil {
				t.Fatalf("first claim: %v", err)
			}
			mustBeInvalid(t, loser.ClaimLease("l", req(holder, time.Minute)))
			// The loser learned about the winner on the way: first observed
			// now, so it expires a full minute from now on its clock.
			mustHold(t, loser, "l", "winner", epoch.Add(time.Minute))
		})
	}
}

func TestExtendByHolderMovesExpiry(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(40 * time.Second)
	if err := c.ExtendLease("l", req("h", time.Minute)); err != nil {
		t.Fatalf("ExtendLease: %v", err)
	}
	mustHold(t, c, "l", "h", epoch.Add(100*time.Second))
}

func TestExtendThatWouldShortenIsNoOp(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("l", req("h", time.Hour)); err != nil {
		t.Fatal(err)
	}
	before := s.lastRevision(t)
	clock.Advance(time.Minute)
	if err := c.ExtendLease("l", req("h", time.Minute)); err != nil {
		t.Fatalf("ExtendLease: %v", err)
	}
	mustHold(t, c, "l", "h", epoch.Add(time.Hour))
	if after := s.lastRevision(t); after != before {
		t.Fatalf("no-op extend wrote to the store: revision %d -> %d", before, after)
	}
}

// A renewal always makes a new revision, even where an extension would be
// a no-op: observers restart their clocks only on a new revision.
func TestRenewAlwaysWrites(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("l", req("h", time.Hour)); err != nil {
		t.Fatal(err)
	}
	before := s.lastRevision(t)
	w, err := c.PrepareRenew("l", req("h", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if w.NoOp() {
		t.Fatal("a renewal that would not move the expiry is a no-op")
	}
	w.Run(context.Background())
	if err := c.Apply(w); err != nil {
		t.Fatal(err)
	}
	if after := s.lastRevision(t); after == before {
		t.Fatalf("renewal wrote nothing: revision still %d", after)
	}
	if f, _ := c.Fence("l"); f != before {
		t.Fatalf("renewal changed the fencing token to %d, want %d", f, before)
	}
}

// claimedForAMinute returns a store, a clock and a client of namespace
// "ns" that has claimed lease "l" for "h" for a minute.
func claimedForAMinute(t *testing.T) (*testStore, *clocktest.Fake, *natskv.Client) {
	t.Helper()
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	return s, clock, c
}

// runLocal prepares a local extension, runs and applies it.
func runLocal(t *testing.T, c *natskv.Client, name string, r lease.Request) *natskv.Write {
	t.Helper()
	w, err := c.PrepareLocalExtend(name, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Run(context.Background())
	if err := c.Apply(w); err != nil {
		t.Fatal(err)
	}
	return w
}

// A local extension the record's duration covers moves the cached expiry
// and writes nothing; a longer one is written like any extension.
func TestLocalExtend(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extend time.Duration
		local  bool
	}{
		{"same duration", time.Minute, true},
		{"shorter", 30 * time.Second, true},
		{"longer", 2 * time.Minute, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, clock, c := claimedForAMinute(t)
			token, before := fence(t, c, "l"), s.lastRevision(t)
			clock.Advance(45 * time.Second)
			if w := runLocal(t, c, "l", req("h", tt.extend)); w.Local() != tt.local {
				t.Fatalf("Local() = %v, want %v", w.Local(), tt.local)
			}
			if wrote := s.lastRevision(t) != before; wrote == tt.local {
				t.Fatalf("wrote %v for a local %v extension", wrote, tt.local)
			}
			mustHold(t, c, "l", "h", epoch.Add(45*time.Second+tt.extend))
			if got := fence(t, c, "l"); got != token {
				t.Fatalf("fencing token %d, want %d", got, token)
			}
		})
	}
}

// A local extension keeps its expiry when the same record is read back,
// and the next claim's write is still checked against the record.
func TestLocalExtendSurvivesReadsOfTheSameRecord(t *testing.T) {
	_, clock, c := claimedForAMinute(t)
	clock.Advance(45 * time.Second)
	runLocal(t, c, "l", req("h", time.Minute))
	clock.Advance(30 * time.Second) // past the written expiry, not the extended one
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	mustHold(t, c, "l", "h", epoch.Add(105*time.Second))
	mustBeInvalid(t, c.ExpireLease("l"))
	if err := c.ExtendLease("l", req("h", 2*time.Minute)); err != nil {
		t.Fatalf("written extension after a local one: %v", err)
	}
}

// A local extension prepared before the lease changed is refused by Apply,
// as a write at a stale revision would be.
func TestLocalExtendOfChangedLeaseIsInvalid(t *testing.T) {
	_, clock, c := claimedForAMinute(t)
	clock.Advance(time.Second)
	w, err := c.PrepareLocalExtend("l", req("h", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseLeaseContext(context.Background(), "l", "h"); err != nil {
		t.Fatal(err)
	}
	w.Run(context.Background())
	mustBeInvalid(t, c.Apply(w))
	if _, _, held := c.Holder("l"); held {
		t.Fatal("a refused local extension revived a released lease")
	}
}

func TestExtendInvalid(t *testing.T) {
	tests := []struct {
		name   string
		holder string
		lease  string
	}{
		{"by a non-holder", "other", "held"},
		{"of a missing lease", "h", "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			c := s.client(t, "ns", newClock())
			if err := c.ClaimLease("held", req("h", time.Minute)); err != nil {
				t.Fatal(err)
			}
			before := s.lastRevision(t)
			mustBeInvalid(t, c.ExtendLease(tt.lease, req(tt.holder, time.Minute)))
			if after := s.lastRevision(t); after != before {
				t.Fatalf("failed extend wrote to the store: revision %d -> %d", before, after)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		ok      bool
	}{
		{"before expiry", time.Minute - time.Nanosecond, false},
		{"at exactly expiry", time.Minute, false},
		{"just after expiry", time.Minute + time.Nanosecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			c := s.client(t, "ns", clock)
			if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			err := c.ExpireLease("l")
			if !tt.ok {
				mustBeInvalid(t, err)
				mustHold(t, c, "l", "h", epoch.Add(time.Minute))
				return
			}
			if err != nil {
				t.Fatalf("ExpireLease: %v", err)
			}
			if _, held := c.Leases()["l"]; held {
				t.Fatal("expired lease still in cache")
			}
			if _, held := s.client(t, "ns", clock).Leases()["l"]; held {
				t.Fatal("expired lease still in the store")
			}
		})
	}
}

func TestExpireMissingLease(t *testing.T) {
	s := newStore(t)
	mustBeInvalid(t, s.client(t, "ns", newClock()).ExpireLease("missing"))
}

func TestExpireAfterConcurrentExtend(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	holder, expirer := s.client(t, "ns", clock), s.client(t, "ns", clock)
	if err := holder.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := expirer.Refresh(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if err := holder.ExtendLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	mustBeInvalid(t, expirer.ExpireLease("l"))
	// The expirer now knows the extension, first observed now.
	mustHold(t, expirer, "l", "h", epoch.Add(3*time.Minute))
	mustHold(t, s.client(t, "ns", clock), "l", "h", epoch.Add(3*time.Minute))
}

func TestRacingClaimsHaveOneWinner(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	clients := []*natskv.Client{s.client(t, "ns", clock), s.client(t, "ns", clock)}
	const rounds = 100
	for round := range rounds {
		name := "race-" + strings.Repeat("x", round%3) + string(rune('a'+round%26)) + "-" + time.Duration(round).String()
		errs := make([]error, len(clients))
		var start, done sync.WaitGroup
		start.Add(1)
		for i, c := range clients {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				errs[i] = c.ClaimLease(name, req("holder-"+string(rune('a'+i)), time.Minute))
			}()
		}
		start.Done()
		done.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, lease.ErrInvalid):
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners (%v), want exactly 1", round, wins, errs)
		}
		a, b := clients[0].Leases()[name], clients[1].Leases()[name]
		if a.Holder == "" || a.Holder != b.Holder {
			t.Fatalf("round %d: clients disagree on the holder: %q vs %q", round, a.Holder, b.Holder)
		}
	}
}

func TestRefreshSeesOtherClientsWritesAndDeletes(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	writer, reader := s.client(t, "ns", clock), s.client(t, "ns", clock)
	for _, name := range []string{"a", "b"} {
		if err := writer.ClaimLease(name, req("h", time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Second)
	if err := reader.Refresh(); err != nil {
		t.Fatal(err)
	}
	mustHold(t, reader, "a", "h", epoch.Add(61*time.Second))
	mustHold(t, reader, "b", "h", epoch.Add(61*time.Second))

	clock.Advance(time.Minute)
	if err := writer.ExpireLease("a"); err != nil {
		t.Fatal(err)
	}
	if err := reader.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got := len(reader.Leases()); got != 1 {
		t.Fatalf("after delete, reader has %d leases, want 1: %v", got, reader.Leases())
	}
	// b's revision did not change: it keeps the expiry of its first
	// observation.
	mustHold(t, reader, "b", "h", epoch.Add(61*time.Second))
}

func TestClaimAfterExpiry(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.ClaimLease("l", req("first", time.Minute)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute + 1)
	if err := c.ExpireLease("l"); err != nil {
		t.Fatal(err)
	}
	if err := c.ClaimLease("l", req("second", time.Minute)); err != nil {
		t.Fatalf("claim after expiry: %v", err)
	}
	// A Client that never saw the delete marker finds it on the way.
	other := s.client(t, "ns", clock)
	mustBeInvalid(t, other.ClaimLease("l", req("third", time.Minute)))
	mustHold(t, other, "l", "second", clock.Now().Add(time.Minute))
}

func TestNamespacesAreIsolated(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	a, b := s.client(t, "ns-a", clock), s.client(t, "ns-b", clock)
	if err := a.ClaimLease("l", req("ha", time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.ClaimLease("l", req("hb", time.Hour)); err != nil {
		t.Fatalf("same lease name in another namespace: %v", err)
	}
	for _, c := range []*natskv.Client{a, b} {
		if err := c.Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	mustHold(t, a, "l", "ha", epoch.Add(time.Minute))
	mustHold(t, b, "l", "hb", epoch.Add(time.Hour))
	if len(a.Leases()) != 1 || len(b.Leases()) != 1 {
		t.Fatalf("namespaces leak: a=%v b=%v", a.Leases(), b.Leases())
	}
}

// A writer whose wall clock says it wrote long ago must not shorten the
// lease: a reader expires it d after it first observed the record.
func TestOthersRecordExpiresByObservation(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	data, err := proto.Marshal(&messages.LeaseRecord{
		Holder:      "h",
		Duration:    durationpb.New(time.Minute),
		WriterId:    "skewed",
		WriterStart: timestamppb.New(time.Now().Add(-24 * time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.put(t, "ns.l", data)
	clock.Advance(time.Hour) // the reader's clock is unrelated to the writer's
	c := s.client(t, "ns", clock)
	observed := clock.Now()
	mustHold(t, c, "l", "h", observed.Add(time.Minute))
	clock.Advance(time.Minute)
	mustBeInvalid(t, c.ExpireLease("l"))
	clock.Advance(time.Nanosecond)
	if err := c.ExpireLease("l"); err != nil {
		t.Fatalf("expire after observation+d: %v", err)
	}
}

func TestClockDriftRateDelaysOthersExpiry(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	writer := s.client(t, "ns", clock)
	if err := writer.ClaimLease("l", req("h", 100*time.Second)); err != nil {
		t.Fatal(err)
	}
	reader, err := natskv.NewClient(natskv.Config{Bucket: s.bucket, Namespace: "ns", Clock: clock, ClockDriftRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.Refresh(); err != nil {
		t.Fatal(err)
	}
	mustHold(t, reader, "l", "h", epoch.Add(101*time.Second))
}

// A duration so long that the drift allowance would overflow a
// time.Duration saturates: the lease must not come out expired in the past.
func TestClockDriftRateOnAHugeDurationDoesNotExpireEarly(t *testing.T) {
	for _, tt := range []struct {
		name     string
		duration *durationpb.Duration
		drift    float64
	}{
		{"longest Duration, small drift", durationpb.New(math.MaxInt64), 0.001},
		{"longest Duration, large drift", durationpb.New(math.MaxInt64), 0.999},
		{"200 years", durationpb.New(200 * 365 * 24 * time.Hour), 0.5},
		{"10000 years (saturates on decode)", &durationpb.Duration{Seconds: 315576000000}, 0.01},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			data, err := proto.Marshal(&messages.LeaseRecord{Holder: "h", Duration: tt.duration})
			if err != nil {
				t.Fatal(err)
			}
			s.put(t, "ns.l", data)
			reader, err := natskv.NewClient(natskv.Config{Bucket: s.bucket, Namespace: "ns", Clock: clock, ClockDriftRate: tt.drift})
			if err != nil {
				t.Fatal(err)
			}
			if err := reader.Refresh(); err != nil {
				t.Fatal(err)
			}
			if _, expiry, ok := reader.Holder("l"); !ok || !expiry.After(clock.Now().Add(tt.duration.AsDuration()-1)) {
				t.Fatalf("expiry %v (held %v), want no earlier than %v after %v", expiry, ok, tt.duration.AsDuration(), clock.Now())
			}
			clock.Advance(time.Hour)
			mustBeInvalid(t, reader.ExpireLease("l"))
		})
	}
}

func TestOddNamesRoundTrip(t *testing.T) {
	names := []string{"mysql/0", "machine:3", "a=b", "日本語", "a-b_c", "x/y:z=1", "ünïcode/ñ"}
	s := newStore(t)
	clock := newClock()
	for _, ns := range []string{"plain", "name/space:1"} {
		c := s.client(t, ns, clock)
		for _, name := range names {
			if err := c.ClaimLease(name, req("holder/"+name, time.Minute)); err != nil {
				t.Fatalf("claim %q in %q: %v", name, ns, err)
			}
		}
		fresh := s.client(t, ns, clock)
		got := fresh.Leases()
		if len(got) != len(names) {
			t.Fatalf("namespace %q: %d leases read back, want %d: %v", ns, len(got), len(names), got)
		}
		for _, name := range names {
			mustHold(t, fresh, name, "holder/"+name, epoch.Add(time.Minute))
		}
	}
}

func TestFencingTokens(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	var last uint64
	for i, holder := range []string{"a", "b", "a", "c"} {
		if err := c.ClaimLease("l", req(holder, time.Minute)); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		token := fence(t, c, "l")
		if token <= last {
			t.Fatalf("holder change %d: fencing token %d, not above %d", i, token, last)
		}
		// Extending keeps the tenure's token, here and in a fresh reader.
		clock.Advance(time.Second)
		if err := c.ExtendLease("l", req(holder, 2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := fence(t, c, "l"); got != token {
			t.Fatalf("extend changed the fencing token: %d -> %d", token, got)
		}
		if got := fence(t, s.client(t, "ns", clock), "l"); got != token {
			t.Fatalf("reader sees fencing token %d, want %d", got, token)
		}
		last = token
		clock.Advance(3 * time.Minute)
		if err := c.ExpireLease("l"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrapdoor(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("mysql/0", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	info := c.Leases()["mysql/0"]
	if err := info.Trapdoor(nil); err != nil {
		t.Fatalf("Trapdoor(nil) = %v", err)
	}
	var f natskv.Fence
	if err := info.Trapdoor(&f); err != nil {
		t.Fatalf("Trapdoor(*Fence) = %v", err)
	}
	want := natskv.Fence{Bucket: natskv.DefaultBucket, Key: "ns.mysql=2F0", Revision: fence(t, c, "mysql/0")}
	if f != want {
		t.Fatalf("fence = %+v, want %+v", f, want)
	}
	for _, key := range []interface{}{"string", f, (*natskv.Fence)(nil)} {
		if err := info.Trapdoor(key); err == nil {
			t.Fatalf("Trapdoor(%#v) = nil, want an error", key)
		}
	}
}

func TestLeasesReturnsCopy(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := c.Leases()
	got["l"] = lease.Info{Holder: "intruder"}
	got["new"] = lease.Info{Holder: "intruder"}
	delete(got, "l")
	after := c.Leases()
	if len(after) != 1 || after["l"].Holder != "h" {
		t.Fatalf("changing the returned map changed the Client: %v", after)
	}
}

func TestRefreshReportsGarbageRecords(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	good := s.client(t, "ns", clock)
	if err := good.ClaimLease("good", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.put(t, "ns.bad", []byte{0xff, 0xfe, 0x00, 0x01})
	s.put(t, "ns.bad=", []byte("x")) // a key natskv could not have written

	c, err := natskv.NewClient(natskv.Config{Bucket: s.bucket, Namespace: "ns", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Refresh()
	if err == nil {
		t.Fatal("Refresh over garbage = nil, want an error")
	}
	for _, want := range []string{`"ns.bad"`, `"bad="`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Refresh error %q does not name %s", err, want)
		}
	}
	mustHold(t, c, "good", "h", epoch.Add(time.Minute))
}

// Nobody can write over an unreadable record (every write is
// revision-checked), and no operation on its lease reports ErrInvalid:
// that would tell the caller its view is up to date and to decide again,
// and a claim decided again from a view without the lease loses again,
// for ever.
func TestOperationsOnAnUnreadableRecordFailWithoutErrInvalid(t *testing.T) {
	for _, tt := range []struct {
		name string
		op   func(c *natskv.Client) error
	}{
		{"claim", func(c *natskv.Client) error { return c.ClaimLease("bad", req("h", time.Minute)) }},
		{"extend", func(c *natskv.Client) error { return c.ExtendLease("bad", req("h", time.Minute)) }},
		{"expire", func(c *natskv.Client) error { return c.ExpireLease("bad") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			s.put(t, "ns.bad", []byte{0xff, 0xfe, 0x00, 0x01})
			c, err := natskv.NewClient(natskv.Config{Bucket: s.bucket, Namespace: "ns", Clock: newClock()})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Refresh(); err == nil {
				t.Fatal("Refresh over garbage = nil, want an error")
			}
			before := s.lastRevision(t)
			err = tt.op(c)
			if err == nil || errors.Is(err, lease.ErrInvalid) || !strings.Contains(err.Error(), `"ns.bad"`) {
				t.Fatalf("err = %v; want one naming key \"ns.bad\", not ErrInvalid", err)
			}
			if after := s.lastRevision(t); after != before {
				t.Fatalf("wrote over an unreadable record: revision %d -> %d", before, after)
			}
			if _, _, ok := c.Holder("bad"); ok {
				t.Fatal("an unreadable record is in the cache as held")
			}
		})
	}
}

func TestBadArgumentsChangeNothing(t *testing.T) {
	long := strings.Repeat("x", natskv.MaxNameBytes+1)
	tests := []struct {
		name  string
		lease string
		req   lease.Request
		want  string
	}{
		{"empty lease", "", req("h", time.Minute), "lease name"},
		{"lease with dot", "a.b", req("h", time.Minute), "lease name"},
		{"long lease", long, req("h", time.Minute), "bytes long"},
		{"invalid UTF-8 lease", "\xff", req("h", time.Minute), "UTF-8"},
		{"empty holder", "l", req("", time.Minute), "holder"},
		{"holder with space", "l", req("a b", time.Minute), "holder"},
		{"zero duration", "l", req("h", 0), "duration"},
		{"negative duration", "l", req("h", -time.Second), "duration"},
	}
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	before := s.lastRevision(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for op, f := range map[string]func(string, lease.Request) error{
				"claim": c.ClaimLease, "extend": c.ExtendLease,
			} {
				err := f(tt.lease, tt.req)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s: err = %v, want one naming %q", op, err, tt.want)
				}
				if errors.Is(err, lease.ErrInvalid) {
					t.Fatalf("%s: bad argument reported as ErrInvalid (a lost race): %v", op, err)
				}
			}
		})
	}
	if after := s.lastRevision(t); after != before {
		t.Fatalf("bad arguments wrote to the store: revision %d -> %d", before, after)
	}
}

func TestConfigValidate(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name  string
		cfg   natskv.Config
		field string
	}{
		{"no bucket", natskv.Config{Namespace: "ns"}, "Config.Bucket"},
		{"empty namespace", natskv.Config{Bucket: s.bucket}, "Config.Namespace"},
		{"bad namespace", natskv.Config{Bucket: s.bucket, Namespace: "a b"}, "Config.Namespace"},
		{"negative drift", natskv.Config{Bucket: s.bucket, Namespace: "ns", ClockDriftRate: -0.1}, "Config.ClockDriftRate"},
		{"drift of one", natskv.Config{Bucket: s.bucket, Namespace: "ns", ClockDriftRate: 1}, "Config.ClockDriftRate"},
		{"NaN drift", natskv.Config{Bucket: s.bucket, Namespace: "ns", ClockDriftRate: math.NaN()}, "Config.ClockDriftRate"},
		{"negative timeout", natskv.Config{Bucket: s.bucket, Namespace: "ns", Timeout: -1}, "Config.Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := natskv.NewClient(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("NewClient: err = %v, want one naming %s", err, tt.field)
			}
		})
	}
}

func TestBucketConfigValidate(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name  string
		cfg   natskv.BucketConfig
		field string
	}{
		{"no JetStream", natskv.BucketConfig{}, "BucketConfig.JetStream"},
		{"bad name", natskv.BucketConfig{JetStream: s.js, Name: "a.b"}, "BucketConfig.Name"},
		{"too many replicas", natskv.BucketConfig{JetStream: s.js, Replicas: 6}, "BucketConfig.Replicas"},
		{"negative replicas", natskv.BucketConfig{JetStream: s.js, Replicas: -1}, "BucketConfig.Replicas"},
		{"bad storage", natskv.BucketConfig{JetStream: s.js, Storage: 7}, "BucketConfig.Storage"},
		{"negative retries", natskv.BucketConfig{JetStream: s.js, ConflictRetries: -1}, "BucketConfig.ConflictRetries"},
		{"marker TTL under a second", natskv.BucketConfig{JetStream: s.js, DeleteMarkerTTL: time.Second / 2}, "BucketConfig.DeleteMarkerTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := natskv.OpenBucket(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("OpenBucket: err = %v, want one naming %s", err, tt.field)
			}
		})
	}
}

func TestOpenBucketBindsExistingAndTurnsOffDirectGet(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	again, err := natskv.OpenBucket(ctx, natskv.BucketConfig{JetStream: s.js})
	if err != nil {
		t.Fatalf("bind existing bucket: %v", err)
	}
	c2, err := natskv.NewClient(natskv.Config{Bucket: again, Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Refresh(); err != nil {
		t.Fatal(err)
	}
	if c2.Leases()["l"].Holder != "h" {
		t.Fatalf("rebound bucket lost the lease: %v", c2.Leases())
	}
	st, err := s.js.Stream(ctx, "KV_"+natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().Config.AllowDirect {
		t.Fatal("bucket stream still allows direct get")
	}
}

func TestRelease(t *testing.T) {
	tests := []struct {
		name   string
		holder string
		ok     bool
	}{
		{"by the holder before expiry", "h", true},
		{"by another holder", "other", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			c := s.client(t, "ns", clock)
			if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
				t.Fatal(err)
			}
			err := c.ReleaseLeaseContext(context.Background(), "l", tt.holder)
			if !tt.ok {
				mustBeInvalid(t, err)
				mustHold(t, c, "l", "h", epoch.Add(time.Minute))
				return
			}
			if err != nil {
				t.Fatalf("release: %v", err)
			}
			if _, held := s.client(t, "ns", clock).Leases()["l"]; held {
				t.Fatal("released lease still in the store")
			}
		})
	}
}

// A snapshot read while the Client was writing must not undo the writes
// that finished after it was read.
func TestSnapshotKeepsNewerWrites(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("old", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	snap, err := c.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ClaimLease("new", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseLeaseContext(context.Background(), "old", "h"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	got := c.Leases()
	if _, ok := got["new"]; !ok || len(got) != 1 {
		t.Fatalf("after applying an older snapshot: %v, want only \"new\"", got)
	}
}

// LoadChanges reads only the writes since the last snapshot: another
// writer's claim and release are seen, and leases that did not change keep
// their expiry.
func TestLoadChangesReadsOnlyWhatChanged(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	other := s.client(t, "ns", newClock())
	for _, name := range []string{"a", "b"} {
		if err := other.ClaimLease(name, req("o", time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	if err := other.ReleaseLeaseContext(context.Background(), "a", "o"); err != nil {
		t.Fatal(err)
	}
	if err := other.ClaimLease("c", req("o", time.Minute)); err != nil {
		t.Fatal(err)
	}
	snap, err := c.LoadChanges(context.Background(), c.Seen())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Len() != 2 {
		t.Errorf("changes snapshot holds %d records, want the 2 writes since the refresh", snap.Len())
	}
	if err := c.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if _, held := c.Leases()["a"]; held {
		t.Error("released lease still held")
	}
	for name, want := range map[string]time.Time{"b": epoch.Add(time.Minute), "c": epoch.Add(10*time.Second + time.Minute)} {
		if holder, expiry, ok := c.Holder(name); !ok || holder != "o" || !expiry.Equal(want) {
			t.Errorf("%s: holder %q, expiry %v, held %v; want o until %v", name, holder, expiry, ok, want)
		}
	}
	again, err := c.LoadChanges(context.Background(), c.Seen())
	if err != nil || again.Len() != 0 {
		t.Fatalf("changes with nothing new: %d records, err %v; want none", again.Len(), err)
	}
}

// The Client's own write, read back as a change, keeps the expiry the write
// gave it: the clock rule restarts an expiry only for a revision it had not
// seen.
func TestLoadChangesKeepsOwnWriteExpiry(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	snap, err := c.LoadChanges(context.Background(), c.Seen())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if _, expiry, ok := c.Holder("l"); !ok || !expiry.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("expiry %v (held %v) after reading the claim back, want %v", expiry, ok, epoch.Add(time.Minute))
	}
}

func TestExpiring(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	for name, d := range map[string]time.Duration{"b": time.Second, "a": time.Second, "c": time.Minute, "d": time.Hour} {
		if err := c.ClaimLease(name, req("h", d)); err != nil {
			t.Fatal(err)
		}
	}
	due, next, ok := c.Expiring(clock.Now().Add(time.Second))
	if len(due) != 0 || !ok || !next.Equal(epoch.Add(time.Second)) {
		t.Fatalf("at expiry: due %v, next %v %v; want none due, next at %v", due, next, ok, epoch.Add(time.Second))
	}
	due, next, ok = c.Expiring(clock.Now().Add(time.Second + 1))
	if strings.Join(due, ",") != "a,b" || !ok || !next.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("just after: due %v, next %v %v; want a,b due, next at %v", due, next, ok, epoch.Add(time.Minute))
	}
}

// Names of the longest length allowed, in the namespace and the lease,
// round-trip through keys even when escaping triples them.
func TestLongestNamesRoundTrip(t *testing.T) {
	for _, tt := range []struct{ name, value string }{
		{"plain", strings.Repeat("a", natskv.MaxNameBytes)},
		{"two-byte runes", strings.Repeat("é", natskv.MaxNameBytes/2)},
		{"all escaped", strings.Repeat("=", natskv.MaxNameBytes)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			c := s.client(t, tt.value, clock)
			if err := c.ClaimLease(tt.value, req(tt.value, time.Minute)); err != nil {
				t.Fatalf("claim: %v", err)
			}
			mustHold(t, s.client(t, tt.value, clock), tt.value, tt.value, epoch.Add(time.Minute))
			clock.Advance(time.Minute + 1)
			if err := c.ExpireLease(tt.value); err != nil {
				t.Fatalf("expire: %v", err)
			}
		})
	}
}

// A lease deleted or purged behind the holder's back: the holder's next
// written extension loses the race and learns the lease is gone, and the
// next claim gets a higher fencing token.
func TestALeaseRemovedBehindTheClientsBack(t *testing.T) {
	for _, tt := range []struct {
		name   string
		remove func(kv jetstream.KeyValue, key string) error
	}{
		{"delete", func(kv jetstream.KeyValue, key string) error { return kv.Delete(context.Background(), key) }},
		{"purge", func(kv jetstream.KeyValue, key string) error { return kv.Purge(context.Background(), key) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _, c := claimedForAMinute(t)
			before := fence(t, c, "l")
			kv, err := s.js.KeyValue(context.Background(), natskv.DefaultBucket)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.remove(kv, "ns.l"); err != nil {
				t.Fatal(err)
			}
			mustBeInvalid(t, c.ExtendLease("l", req("h", 2*time.Minute)))
			if holder, _, ok := c.Holder("l"); ok {
				t.Fatalf("after losing to a %s the cache says %q holds the lease", tt.name, holder)
			}
			if err := c.ClaimLease("l", req("next", time.Minute)); err != nil {
				t.Fatalf("claim after a %s: %v", tt.name, err)
			}
			if after := fence(t, c, "l"); after <= before {
				t.Fatalf("fencing token %d after a %s, not above %d", after, tt.name, before)
			}
		})
	}
}
