package natskv

import (
	"container/heap"
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

func (q *expiryQueue) Len() int           { return len(q.entries) }
func (q *expiryQueue) Less(i, j int) bool { return q.entries[i].expiry.Before(q.entries[j].expiry) }
func (q *expiryQueue) Swap(i, j int)      { q.entries[i], q.entries[j] = q.entries[j], q.entries[i] }
func (q *expiryQueue) Push(x any)         { q.entries = append(q.entries, x.(expiryEntry)) }
func (q *expiryQueue) Pop() any {
	n := len(q.entries) - 1
	e := q.entries[n]
	q.entries[n] = expiryEntry{}
	q.entries = q.entries[:n]
	return e
}

// hold installs s, a held lease's state, in the cache and queues its
// expiry.
func (c *Client) hold(name string, s *state) {
	c.known[name] = s
	heap.Push(&c.expiries, expiryEntry{expiry: s.expiry, name: name, st: s})
	if len(c.expiries.entries) > 2*len(c.known)+64 {
		c.compactExpiries()
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
	heap.Init(q)
}

// Expiring returns the held leases whose expiry is before now, in name
// order, and the earliest expiry of the others (ok is false if there are
// none). It does not change the cache: a lease stays due until a write or a
// refresh changes it.
func (c *Client) Expiring(now time.Time) (due []string, next time.Time, ok bool) {
	q := &c.expiries
	for len(q.entries) > 0 && !c.live(q.entries[0]) {
		heap.Pop(q)
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
