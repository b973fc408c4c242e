//go:build !faultinject

package natskv

// earlyExpiryFault is the deliberate bug of faultinject.go, which only
// -tags faultinject builds contain. Here it is a constant false: the check
// in Apply compiles away.
func earlyExpiryFault() bool { return false }
