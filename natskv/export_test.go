package natskv

// CachedKeys returns how many lease keys c's cache holds: held leases and
// the delete markers of released ones.
func CachedKeys(c *Client) int { return len(c.known) }
