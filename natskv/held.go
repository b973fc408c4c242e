package natskv

import (
	"iter"
	"time"

	"github.com/google/btree"
)

// The held set. Beside known, the Client keeps two orders of its held
// leases: expiries (expiry.go) and names, a B-tree of their names in byte
// order. Every change of a key between held and not held goes through hold
// or free, which keep names in step; a full load, which swaps known for a
// new map, then drops what it left out (unindexDropped).

// nameIndexDegree is the B-tree's degree: nodes of up to 63 names.
const nameIndexDegree = 32

func newNameIndex() *btree.BTreeG[string] { return btree.NewOrderedG[string](nameIndexDegree) }

// hold installs s, a held lease's state, in the cache, indexes its name if
// it was not held, and queues its expiry.
func (c *Client) hold(name string, s *state) {
	if prev := c.known[name]; prev == nil || !prev.held {
		c.names.ReplaceOrInsert(name)
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
		c.names.Delete(name)
	}
	if marker == nil {
		delete(c.known, name)
	} else {
		c.known[name] = marker
	}
}

// unindexDropped takes out of the name index the leases held in old, the
// cache a full load replaced, that the new cache does not hold. The rest
// is in step: the load moved unchanged states across as they were, and
// changed the others through hold and free.
func (c *Client) unindexDropped(old map[string]*state) {
	for name, s := range old {
		if now := c.known[name]; s.held && (now == nil || !now.held) {
			c.names.Delete(name)
		}
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
// until a write or a refresh removes it, as Leases has it. Finding the
// start costs a walk down a B-tree, and each lease yielded a map lookup:
// a page of the namespace costs as much as the page, not as the
// namespace, and allocates nothing per lease. The cache must not change
// while the iteration runs.
func (c *Client) LeasesAfter(after string) iter.Seq[Held] {
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
