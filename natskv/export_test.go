package natskv

// CachedKeys returns how many lease keys c's cache holds: held leases and
// the delete markers of released ones.
func CachedKeys(c *Client) int { return len(c.known) }

// LoseOutcome makes a Write that has run look as if its acknowledgement
// never came (a timeout): the store may hold the write, the Write says err.
func LoseOutcome(w *Write, err error) { w.revision, w.err = 0, err }
