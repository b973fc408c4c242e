package natskv

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

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

// Whatever happens to the cache (claims, extensions, deletes, leases
// dropped, the whole cache replaced), the queue answers as a scan of every
// lease would.
func TestExpiringAgreesWithAScan(t *testing.T) {
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
					c.known[name] = &state{}
				case r < 85: // left out of a snapshot
					delete(c.known, name)
				case r < 87: // a snapshot keeps some states and drops others
					old := c.known
					c.known = make(map[string]*state)
					for n, s := range old {
						if rng.IntN(2) == 0 {
							c.known[n] = s
						}
					}
				default:
					now = now.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
				}
				due, next, ok := c.Expiring(now)
				wantDue, wantNext, wantOK := expiringByScan(c, now)
				if !slices.Equal(due, wantDue) || ok != wantOK || !next.Equal(wantNext) {
					t.Fatalf("step %d: Expiring = %v, %v, %v; a scan says %v, %v, %v", step, due, next, ok, wantDue, wantNext, wantOK)
				}
			}
			if n := len(c.expiries.entries); n > 2*len(c.known)+64+1 {
				t.Errorf("queue holds %d entries for %d leases", n, len(c.known))
			}
		})
	}
}
