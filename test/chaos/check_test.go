package chaos

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hand-made histories: times in milliseconds from the start of the run.

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func claimOp(holder string, d, start, end int, res Result, token uint64) Op {
	return Op{Kind: OpClaim, Lease: "L", Holder: holder, Duration: ms(d), Start: ms(start), End: ms(end), Result: res, Token: token}
}

func checkOp(holder string, start, end int, res Result, token uint64) Op {
	return Op{Kind: OpCheck, Lease: "L", Holder: holder, Start: ms(start), End: ms(end), Result: res, Token: token}
}

func releaseOp(holder string, start, end int, res Result) Op {
	return Op{Kind: OpRelease, Lease: "L", Holder: holder, Start: ms(start), End: ms(end), Result: res}
}

func waitOp(start, end int, res Result) Op {
	return Op{Kind: OpWait, Lease: "L", Start: ms(start), End: ms(end), Result: res}
}

func history(ops ...Op) History {
	for i := range ops {
		ops[i].ID = i
	}
	return History{Ops: ops}
}

// broken returns the invariants a report says were broken.
func broken(r Report) []int {
	var out []int
	for inv, n := range r.Found {
		if n > 0 {
			out = append(out, inv)
		}
	}
	return out
}

func TestCheck(t *testing.T) {
	cfg := Config{WaitBound: time.Second, FaultSlack: 100 * time.Millisecond}
	tests := []struct {
		name   string
		h      History
		faults []Fault
		want   []int
	}{
		{name: "empty", h: history()},
		{
			name: "handover after expiry",
			h: history(
				claimOp("A", 100, 0, 10, OK, 5), checkOp("A", 10, 12, OK, 5),
				claimOp("B", 100, 50, 55, Denied, 0),
				claimOp("B", 100, 105, 110, OK, 7), checkOp("B", 110, 112, OK, 7),
				checkOp("A", 115, 120, NotHeld, 0),
			),
		},
		{
			name: "handover after release",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5), releaseOp("A", 20, 30, OK),
				claimOp("B", 1000, 40, 50, OK, 7),
			),
		},
		{
			name: "failed release may have released",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5), releaseOp("A", 20, 30, Failed),
				claimOp("B", 1000, 40, 50, OK, 7),
			),
		},
		{
			name: "overlap in real time",
			h:    history(claimOp("A", 100, 0, 10, OK, 0), claimOp("B", 100, 50, 60, OK, 0)),
			want: []int{1},
		},
		{
			name: "overlap ordered by token",
			h:    history(claimOp("A", 100, 0, 10, OK, 5), claimOp("B", 100, 5, 20, OK, 7)),
			want: []int{1},
		},
		{
			name: "concurrent claims, one token unknown, each ended in the other's window",
			h:    history(claimOp("A", 1000, 0, 10, OK, 7), claimOp("B", 1000, 5, 15, OK, 0)),
			want: []int{1},
		},
		{
			name: "concurrent claims, no token known, each ended in the other's window",
			h:    history(claimOp("A", 1000, 0, 10, OK, 0), claimOp("B", 1000, 5, 15, OK, 0)),
			want: []int{1},
		},
		{
			name: "concurrent claims, no token known, one window over before the other call ended",
			h:    history(claimOp("A", 1000, 0, 10, OK, 0), claimOp("B", 3, 5, 15, OK, 0)),
		},
		{
			name: "a tenure seen before another holder's claim is said held after it",
			h: history(
				claimOp("A", 300, 0, 10, OK, 5), claimOp("B", 300, 400, 410, OK, 0),
				checkOp("A", 800, 810, OK, 5),
			),
			want: []int{3},
		},
		{
			name: "a new tenure after another holder's claim is held",
			h: history(
				claimOp("A", 300, 0, 10, OK, 5), claimOp("B", 300, 400, 410, OK, 0),
				claimOp("A", 300, 750, 760, OK, 9), checkOp("A", 800, 810, OK, 9),
			),
		},
		{
			name: "wait returned while a claim and its extension held the lease throughout",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5), claimOp("A", 1000, 500, 510, OK, 5),
				waitOp(100, 1002, OK),
			),
			want: []int{4},
		},
		{
			name: "wait returned in a gap between a claim and a later extension",
			h: history(
				claimOp("A", 400, 0, 10, OK, 5), claimOp("A", 1000, 500, 510, OK, 6),
				waitOp(100, 1002, OK),
			),
		},
		{
			name: "concurrent claims, the later one's window starts later",
			h:    history(claimOp("A", 100, 0, 10, OK, 7), claimOp("B", 1, 5, 20, OK, 5)),
		},
		{
			name: "release answered not held ends nothing",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5), releaseOp("A", 20, 30, NotHeld),
				claimOp("B", 1000, 40, 50, OK, 7),
			),
			want: []int{1, 5},
		},
		{
			name: "another holder's earlier claim has the greater token",
			h:    history(claimOp("B", 50, 0, 10, OK, 7), claimOp("A", 100, 100, 110, OK, 5)),
			want: []int{2},
		},
		{
			name: "held without a fencing token",
			h:    history(claimOp("A", 1000, 0, 10, OK, 5), checkOp("A", 20, 30, OK, 0)),
			want: []int{2},
		},
		{
			name: "two holders share a token",
			h:    history(checkOp("A", 0, 10, OK, 5), checkOp("B", 500, 510, OK, 5)),
			want: []int{2},
		},
		{
			name: "token decreases for one holder",
			h:    history(checkOp("A", 0, 10, OK, 9), checkOp("A", 20, 30, OK, 7)),
			want: []int{2},
		},
		{
			name: "overlapping observations may see tokens in any order",
			h:    history(checkOp("A", 0, 10, OK, 9), checkOp("B", 5, 15, OK, 7)),
		},
		{
			name: "check held with an older token than another holder's claim",
			h:    history(claimOp("B", 5, 0, 10, OK, 9), checkOp("A", 20, 30, OK, 7)),
			want: []int{3},
		},
		{
			name: "check held inside another holder's window",
			h:    history(claimOp("B", 1000, 0, 10, OK, 0), checkOp("A", 20, 30, OK, 12)),
			want: []int{3},
		},
		{
			name: "check held after another holder's window",
			h:    history(claimOp("B", 10, 0, 10, OK, 9), checkOp("A", 20, 30, OK, 12)),
		},
		{
			name: "wait returned while held throughout",
			h:    history(claimOp("A", 1000, 0, 10, OK, 5), waitOp(20, 30, OK)),
			want: []int{4},
		},
		{
			name: "wait returned after the window",
			h:    history(claimOp("A", 100, 0, 10, OK, 5), waitOp(20, 150, OK)),
		},
		{
			name: "wait still running long after a release",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				waitOp(50, 3000, OK),
			),
			want: []int{4},
		},
		{
			name: "wait started while free and returned late",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				waitOp(500, 2000, Failed), claimOp("C", 100, 2500, 2510, OK, 8),
			),
			want: []int{4},
		},
		{
			name: "slow wait, but the lease was claimed again soon",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				claimOp("C", 100, 500, 510, OK, 8), waitOp(50, 3000, OK),
			),
		},
		{
			name: "slow wait, but a fault was near",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				waitOp(50, 3000, OK),
			),
			faults: []Fault{{Kind: "pause", Start: ms(200), End: ms(2500)}},
		},
		{
			name: "slow wait, and a fault long before",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 1000, 1010, OK),
				waitOp(50, 3000, OK),
			),
			faults: []Fault{{Kind: "kill", Start: ms(100), End: ms(200)}},
			want:   []int{4},
		},
		{
			name: "slow wait, but a fault before still lingered",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 1000, 1010, OK),
				waitOp(50, 3000, OK),
			),
			faults: []Fault{{Kind: "kill", Start: ms(100), End: ms(200), Linger: ms(5000)}},
		},
		{
			name: "slow wait, but a denied claim may have succeeded at first",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				claimOp("C", 100, 90, 5120, Denied, 0), waitOp(50, 3000, OK),
			),
		},
		{
			name: "slow wait, but a claim that may have succeeded overlapped the release",
			h: history(
				claimOp("A", 10000, 0, 10, OK, 5), releaseOp("A", 100, 110, OK),
				claimOp("C", 100, 90, 120, Failed, 0), waitOp(50, 3000, OK),
			),
		},
		{
			name: "acknowledged claim lost",
			h:    history(claimOp("A", 1000, 0, 10, OK, 5), checkOp("A", 500, 510, NotHeld, 0)),
			want: []int{5},
		},
		{
			name: "holder denied its own lease",
			h:    history(claimOp("A", 1000, 0, 10, OK, 5), claimOp("A", 1000, 20, 30, Denied, 0)),
			want: []int{5},
		},
		{
			name: "not held after the window",
			h:    history(claimOp("A", 100, 0, 10, OK, 5), checkOp("A", 200, 210, NotHeld, 0)),
		},
		{
			name: "not held after its own release",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5), releaseOp("A", 20, 30, OK),
				checkOp("A", 40, 50, NotHeld, 0), releaseOp("A", 60, 70, NotHeld),
			),
		},
		{
			name: "failed operations say nothing",
			h: history(
				claimOp("A", 1000, 0, 10, OK, 5),
				claimOp("B", 1000, 20, 30, Failed, 0), checkOp("B", 40, 50, Failed, 0),
				checkOp("A", 60, 70, Failed, 0), waitOp(20, 30, Failed),
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.h.Faults = tt.faults
			r := Check(tt.h, cfg)
			if got := broken(r); !slices.Equal(got, tt.want) {
				t.Errorf("broken invariants %v, want %v", got, tt.want)
				for _, v := range r.Violations {
					t.Log(v)
				}
			}
			for _, v := range r.Violations {
				if len(v.Ops) < 1 || len(v.Ops) > 3 {
					t.Errorf("violation shows %d operations, want the 1 to 3 involved:\n%s", len(v.Ops), v)
				}
			}
		})
	}
}

func TestViolationString(t *testing.T) {
	r := Check(history(
		claimOp("A", 100, 1000, 1010, OK, 5),
		Op{Kind: OpCheck, Lease: "other", Holder: "C", Start: ms(1200), End: ms(1201), Result: OK, Token: 1},
		claimOp("B", 100, 1050, 1060, OK, 0),
	), Config{})
	if len(r.Violations) != 1 {
		t.Fatalf("got %d violations, want 1: %v", len(r.Violations), r.Violations)
	}
	got := r.Violations[0].String()
	want := `invariant 1 (no two holders' guarantees overlap), lease "L": B's claim succeeded by +1.060s, but A was guaranteed the lease until +1.100s
    #0 client 0: claim L holder=A duration=100ms [+1.000s, +1.010s] ok token=5
    #2 client 0: claim L holder=B duration=100ms [+1.050s, +1.060s] ok`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCheckKeepsAFewOfEach(t *testing.T) {
	var ops []Op
	ops = append(ops, claimOp("A", 10000, 0, 10, OK, 0))
	for i := range 50 {
		ops = append(ops, checkOp(fmt.Sprint("B", i), 100+i, 101+i, OK, uint64(100+i)))
	}
	r := Check(history(ops...), Config{MaxPerInvariant: 3})
	if r.Found[3] != 50 || len(r.Violations) != 3 {
		t.Errorf("found %d, kept %d; want 50 found and 3 kept", r.Found[3], len(r.Violations))
	}
}

func TestStats(t *testing.T) {
	h := history(
		claimOp("A", 100, 0, 10, OK, 5), checkOp("A", 10, 12, OK, 5),
		claimOp("B", 100, 50, 55, Denied, 0),
		claimOp("B", 100, 105, 110, OK, 7), checkOp("B", 110, 112, OK, 7),
		claimOp("B", 100, 150, 160, OK, 7),
		releaseOp("B", 170, 180, OK),
		claimOp("A", 100, 200, 210, OK, 9),
		waitOp(300, 310, OK), waitOp(300, 310, Failed),
	)
	h.Faults = []Fault{{Kind: "kill"}}
	got := Check(h, Config{}).Stats
	want := Stats{
		Ops: 10, Claims: 5, ClaimsOK: 4, Denied: 1, Checks: 2, ChecksHeld: 2,
		Releases: 1, Released: 1, Waits: 2, WaitsOK: 1, Failed: 1, Faults: 1,
		Tenures: 3, HolderChanges: 2, TokensKnownOnClaims: 4,
	}
	if got != want {
		t.Errorf("stats\n%+v, want\n%+v", got, want)
	}
	if s := got.String(); !strings.Contains(s, "3 tenures, 2 holder changes") {
		t.Errorf("String() = %q", s)
	}
}

func TestRecorder(t *testing.T) {
	r := NewRecorder()
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			for range 100 {
				start := r.Now()
				r.Add(Op{Client: c, Kind: OpCheck, Lease: "L", Start: start, End: r.Now(), Result: OK})
			}
		})
	}
	wg.Go(func() { r.AddFault(Fault{Kind: "cut", Start: r.Now(), End: r.Now()}) })
	wg.Wait()
	h := r.History()
	if len(h.Ops) != 800 || len(h.Faults) != 1 {
		t.Fatalf("recorded %d ops and %d faults, want 800 and 1", len(h.Ops), len(h.Faults))
	}
	for i, op := range h.Ops {
		if op.ID != i {
			t.Fatalf("op %d has ID %d", i, op.ID)
		}
		if op.End < op.Start {
			t.Fatalf("op %v ends before it starts", op)
		}
	}
}
