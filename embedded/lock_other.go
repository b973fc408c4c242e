//go:build !unix

package embedded

import "io"

// lockDataDir locks nothing where flock is not available: there, keeping
// one server per data dir is the operator's part.
func lockDataDir(string) (io.Closer, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
