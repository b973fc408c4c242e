package natskv

import (
	"iter"
	"slices"
	"time"

	"github.com/google/btree"
)

// The held set. Beside known, the Client keeps its held leases in order of
// expiry (expiries, expiry.go), counts them (held), and, once LeasesAfter
// has been called, keeps their names in byte order (names, a B-tree).
// Every change of a key between held and not held goes through hold or
// free, which keep all three in step; a full load, which swaps known for a
// new map, moves across unchanged what it keeps (move) and counts out what
// it leaves behind (forget).
//
// The name index is built on first use because it is not free: inserting
// a new lease's name costs about as much again as putting it in known
// (string comparisons down the tree), which took about 5% off the claim
// rate of a namespace of new leases (docs/benchmarks.md).

// nameIndexDegree is the B-tree's degree: nodes of up to 63 names.
const nameIndexDegree = 32

// hold installs s, a held lease's state, in the cache, counts and indexes
// the lease if it was not held, and queues its expiry.
func (c *Client) hold(name string, s *state) {
	if prev := c.known[name]; prev == nil || !prev.held {
		c.held++
		if c.names != nil {
			c.names.ReplaceOrInsert(name)
		}
	}
	c.known[name] = s
	c.expiries.push(expiryEntry{expiry: s.expiry, name: name, st: s})
	if len(c.expiries.entries) > 2*len(c.known)+64 {
		c.compactExpiries()
	}
}

// free records that a lease is not held: marker is the delete marker left
// under its key, or nil if nothing is left of the key.
func (c *Client) free(name string, marker *state) {
	if prev := c.known[name]; prev != nil && prev.held {
		c.unhold(name)
	}
	if marker == nil {
		delete(c.known, name)
	} else {
		c.known[name] = marker
	}
}

// move moves a lease's state, if it has one, from old, the cache a full
// load replaces, to the new cache as it is: still counted and indexed.
func (c *Client) move(old map[string]*state, name string) {
	if s, ok := old[name]; ok {
		c.known[name] = s
		delete(old, name)
	}
}

// forget counts out and unindexes the held leases left in old once a full
// load has moved across what it keeps: the store has them no more.
func (c *Client) forget(old map[string]*state) {
	for name, s := range old {
		if s.held {
			c.unhold(name)
		}
	}
}

// unhold counts out and unindexes a lease no longer held.
func (c *Client) unhold(name string) {
	c.held--
	if c.names != nil {
		c.names.Delete(name)
	}
}

// indexNames builds the name index, if it is not built yet.
func (c *Client) indexNames() {
	if c.names != nil {
		return
	}
	names := make([]string, 0, c.held)
	for name, s := range c.known {
		if s.held {
			names = append(names, name)
		}
	}
	slices.Sort(names) // inserted in order, each insert walks a warm path
	c.names = btree.NewOrderedG[string](nameIndexDegree)
	for _, name := range names {
		c.names.ReplaceOrInsert(name)
	}
}

// Held is a held lease as the cache knows it: what Leases gives for it,
// without an Info's Trapdoor (a closure, so an allocation per lease).
type Held struct {
	Lease  string
	Holder string
	Expiry time.Time // on the Client's clock
	Fence  uint64    // the fencing token of the holder's tenure (see Fence)
}

// LeasesAfter returns the held leases named after after, in name order:
// by the names' bytes (UTF-8), as Go compares strings. "" starts from the
// first; after need not name a lease. A lease past its expiry is yielded
// until a write or a refresh removes it, as Leases has it.
//
// The first call builds the name index, a copy and sort of the held
// leases' names; from then on, finding the start costs a walk down a
// B-tree, and each lease yielded a map lookup: a page of the namespace
// costs as much as the page, not as the namespace, and allocates nothing
// per lease. The cache must not change while the iteration runs.
func (c *Client) LeasesAfter(after string) iter.Seq[Held] {
	c.indexNames()
	return func(yield func(Held) bool) {
		c.names.AscendGreaterOrEqual(after, func(name string) bool {
			if name == after {
				return true
			}
			s := c.known[name]
			return yield(Held{Lease: name, Holder: s.holder, Expiry: s.expiry, Fence: s.fence})
		})
	}
}
