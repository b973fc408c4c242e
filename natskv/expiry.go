package natskv

import (
	"sort"
	"time"
)

// expiryQueue orders the Client's held leases by expiry, earliest first,
// so that finding what is due costs as much as is due, not as many leases
// as there are. It is a binary heap of entries that are not removed when a
// lease changes: an entry is live while its state is still the lease's
// state in the cache. Dead entries are dropped when they reach the top, and
// the heap is rebuilt from the live ones when it grows past twice the cache.
type expiryQueue struct {
	entries []expiryEntry
	walk    []int // scratch for Expiring
}

type expiryEntry struct {
	expiry time.Time
	name   string
	st     *state
}

// The heap operations of container/heap, written out for expiryEntry:
// through heap.Interface every push would box its entry.

func (q *expiryQueue) less(i, j int) bool { return q.entries[i].expiry.Before(q.entries[j].expiry) }

func (q *expiryQueue) push(e expiryEntry) {
	q.entries = append(q.entries, e)
	for i := len(q.entries) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q.entries[i], q.entries[parent] = q.entries[parent], q.entries[i]
		i = parent
	}
}

// popTop removes the earliest entry.
func (q *expiryQueue) popTop() {
	n := len(q.entries) - 1
	q.entries[0] = q.entries[n]
	q.entries[n] = expiryEntry{}
	q.entries = q.entries[:n]
	q.down(0)
}

func (q *expiryQueue) down(i int) {
	n := len(q.entries)
	for {
		least := i
		if l := 2*i + 1; l < n && q.less(l, least) {
			least = l
		}
		if r := 2*i + 2; r < n && q.less(r, least) {
			least = r
		}
		if least == i {
			return
		}
		q.entries[i], q.entries[least] = q.entries[least], q.entries[i]
		i = least
	}
}

// reorder makes the entries a heap again.
func (q *expiryQueue) reorder() {
	for i := len(q.entries)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (c *Client) live(e expiryEntry) bool { return c.known[e.name] == e.st }

// compactExpiries rebuilds the queue from its live entries.
func (c *Client) compactExpiries() {
	q := &c.expiries
	live := q.entries[:0]
	for _, e := range q.entries {
		if c.live(e) {
			live = append(live, e)
		}
	}
	clear(q.entries[len(live):])
	q.entries = live
	q.reorder()
}

// Expiring returns the held leases whose expiry is before now, in name
// order, and the earliest expiry of the others (ok is false if there are
// none). It does not change the cache: a lease stays due until a write or a
// refresh changes it.
func (c *Client) Expiring(now time.Time) (due []string, next time.Time, ok bool) {
	q := &c.expiries
	for len(q.entries) > 0 && !c.live(q.entries[0]) {
		q.popTop()
	}
	// Every entry below one that is not yet due is not due either: walk
	// the due part of the heap, and its border for the earliest of the
	// rest (looking past dead entries there).
	q.walk = append(q.walk[:0], 0)
	for len(q.walk) > 0 {
		i := q.walk[len(q.walk)-1]
		q.walk = q.walk[:len(q.walk)-1]
		if i >= len(q.entries) {
			continue
		}
		e := q.entries[i]
		switch {
		case now.After(e.expiry):
			if c.live(e) {
				due = append(due, e.name)
			}
		case c.live(e):
			if !ok || e.expiry.Before(next) {
				next, ok = e.expiry, true
			}
			continue
		}
		q.walk = append(q.walk, 2*i+1, 2*i+2)
	}
	sort.Strings(due)
	return due, next, ok
}
