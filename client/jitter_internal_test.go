package client

import (
	"testing"
	"time"
)

// Waits between attempts are spread over [d/2, d], not all d.
func TestJitterSpreadsWaitsOverTheUpperHalf(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, DefaultMinBackoff, DefaultMaxBackoff} {
		seen := map[time.Duration]bool{}
		for range 1000 {
			w := jitter(d)
			if w < d/2 || w > d {
				t.Fatalf("jitter(%v) = %v, outside [%v, %v]", d, w, d/2, d)
			}
			seen[w] = true
		}
		if len(seen) < 10 {
			t.Fatalf("jitter(%v) gave %d distinct waits in 1000 draws", d, len(seen))
		}
	}
}
