package natskv

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

// churn changes a Client's cache at random, 3000 times, through the same
// functions as its writes and loads: leases claimed or extended, expired or
// released, keys left out of a load, and whole loads that keep some states
// and drop the others; and the clock moves on. check runs after each step.
func churn(t *testing.T, check func(t *testing.T, c *Client, now time.Time, step int)) {
	epoch := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			c := &Client{known: make(map[string]*state)}
			now := epoch
			for step := range 3000 {
				name := fmt.Sprintf("l%d", rng.IntN(200))
				switch r := rng.IntN(100); {
				case r < 60: // claimed or extended
					c.hold(name, &state{held: true, expiry: now.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)})
				case r < 80: // expired or released
					c.free(name, &state{})
				case r < 85: // left out of a snapshot
					c.free(name, nil)
				case r < 87: // a snapshot keeps some states and drops others
					old := c.known
					c.known = make(map[string]*state)
					for _, n := range slices.Sorted(maps.Keys(old)) {
						if rng.IntN(2) == 0 {
							c.move(old, n)
						}
					}
					c.forget(old)
				default:
					now = now.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
				}
				check(t, c, now, step)
			}
		})
	}
}

// expiringByScan is what Expiring must return, by looking at every lease.
func expiringByScan(c *Client, now time.Time) (due []string, next time.Time, ok bool) {
	for name, s := range c.known {
		switch {
		case !s.held:
		case now.After(s.expiry):
			due = append(due, name)
		case !ok || s.expiry.Before(next):
			next, ok = s.expiry, true
		}
	}
	sort.Strings(due)
	return due, next, ok
}

// Whatever happens to the cache, the queue answers as a scan of every
// lease would.
func TestExpiringAgreesWithAScan(t *testing.T) {
	churn(t, func(t *testing.T, c *Client, now time.Time, step int) {
		due, next, ok := c.Expiring(now)
		wantDue, wantNext, wantOK := expiringByScan(c, now)
		if !slices.Equal(due, wantDue) || ok != wantOK || !next.Equal(wantNext) {
			t.Fatalf("step %d: Expiring = %v, %v, %v; a scan says %v, %v, %v", step, due, next, ok, wantDue, wantNext, wantOK)
		}
		if step == 2999 { // a hold compacts the queue if it has grown too long
			c.hold("last", &state{held: true, expiry: now})
			if n := len(c.expiries.entries); n > 2*len(c.known)+64 {
				t.Errorf("queue holds %d entries for %d leases", n, len(c.known))
			}
		}
	})
}

// Whatever happens to the cache, Count counts its held leases, and the
// name index, built halfway and kept from then on, holds exactly them, so
// LeasesAfter answers as a scan of every lease would.
func TestNameIndexAgreesWithAScan(t *testing.T) {
	churn(t, func(t *testing.T, c *Client, _ time.Time, step int) {
		var want []string
		for name, s := range c.known {
			if s.held {
				want = append(want, name)
			}
		}
		if c.Count() != len(want) {
			t.Fatalf("step %d: Count = %d; the cache holds %d leases", step, c.Count(), len(want))
		}
		if step < 1500 {
			return
		}
		slices.Sort(want)
		var got []string
		for h := range c.LeasesAfter("") {
			got = append(got, h.Lease)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: the index lists %v; the cache holds %v", step, got, want)
		}
	})
}
