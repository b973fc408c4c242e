package actors

import (
	"slices"
	"testing"
	"time"

	"github.com/leaseagent/lease/natskv"
)

// mustPage fails the test unless n's page after after of at most limit
// leases names want and says more, each lease as Leases has it.
func mustPage(h *harness, n *Namespace, after string, limit int, want []string, more bool) {
	h.t.Helper()
	page, gotMore, err := n.LeasesPage(h.ctx(), after, limit)
	if err != nil {
		h.t.Fatalf("LeasesPage(%q, %d): %v", after, limit, err)
	}
	leases, err := n.Leases(h.ctx())
	if err != nil {
		h.t.Fatal(err)
	}
	var got []string
	for _, l := range page {
		got = append(got, l.Lease)
		info := leases[l.Lease]
		var f natskv.Fence
		if err := info.Trapdoor(&f); err != nil || info.Holder != l.Holder || !info.Expiry.Equal(l.Expiry) || f.Revision != l.Fence {
			h.t.Fatalf("page entry %+v; Leases has holder %q, expiry %v, fence %d", l, info.Holder, info.Expiry, f.Revision)
		}
	}
	if !slices.Equal(got, want) || gotMore != more {
		h.t.Fatalf("LeasesPage(%q, %d) = %q, more %v; want %q, more %v", after, limit, got, gotMore, want, more)
	}
}

// A page starts after any string, present as a name or not, holds at most
// limit leases in the order of their names' UTF-8 bytes, and says whether
// more follow.
func TestLeasesPageBoundaries(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	for _, name := range []string{"😀", "z", "a", "Ｚ", "ab", "é", "B"} {
		h.claim(n, name, "h-"+name, time.Minute)
	}
	all := []string{"B", "a", "ab", "z", "é", "Ｚ", "😀"}
	for _, tt := range []struct {
		name  string
		after string
		limit int
		want  []string
		more  bool
	}{
		{"limit larger than the namespace", "", 100, all, false},
		{"limit the size of the namespace", "", len(all), all, false},
		{"limit 1", "", 1, all[:1], true},
		{"after a name present", "a", 2, []string{"ab", "z"}, true},
		{"after a name not present", "b", 10, []string{"z", "é", "Ｚ", "😀"}, false},
		{"after a name before every lease", "A", 2, []string{"B", "a"}, true},
		{"non-ASCII names by their bytes", "z", 2, []string{"é", "Ｚ"}, true},
		{"a page that ends with the namespace", "é", 2, []string{"Ｚ", "😀"}, false},
		{"after the last", "😀", 1, nil, false},
		{"after every name", "\U0010FFFF", 5, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) { mustPage(h, n, tt.after, tt.limit, tt.want, tt.more) })
	}
}

// A lease past its expiry is left out of a page, and does not count as
// more, even while its removal cannot be written (here: a closed write
// guard keeps it in the cache).
func TestLeasesPageLeavesOutLeasesPastTheirExpiry(t *testing.T) {
	h := newHarness(t)
	g := newGuard(h.m)
	n := h.start("ns")
	for _, name := range []string{"a", "c", "e"} {
		h.claim(n, name, "h", time.Minute)
	}
	for _, name := range []string{"b", "d"} {
		h.claim(n, name, "h", time.Hour)
	}
	g.open.Store(false)
	h.clock.Advance(2 * time.Minute)
	for _, tt := range []struct {
		name  string
		after string
		limit int
		want  []string
		more  bool
	}{
		{"from the first", "", 10, []string{"b", "d"}, false},
		{"limit 1", "", 1, []string{"b"}, true},
		{"only expired leases follow", "b", 1, []string{"d"}, false},
		{"after the last held", "d", 1, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) { mustPage(h, n, tt.after, tt.limit, tt.want, tt.more) })
	}
	if held := h.outsider("ns").Count(); held != 5 {
		t.Fatalf("the store holds %d leases, want all 5: the test needs the expired ones not removed", held)
	}
}

// Claims and releases after a page are in the next page: the index the
// first page built is kept in step.
func TestLeasesPageFollowsClaimsAndReleases(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "b", "h", time.Minute)
	h.claim(n, "d", "h", time.Minute)
	mustPage(h, n, "", 10, []string{"b", "d"}, false)
	h.claim(n, "c", "h", time.Minute)
	h.claim(n, "a", "h", time.Minute)
	if err := n.Release(h.ctx(), "b", "h"); err != nil {
		t.Fatal(err)
	}
	mustPage(h, n, "", 10, []string{"a", "c", "d"}, false)
}
