//go:build faultinject

// This file exists only to prove that test/chaos catches a broken lease
// store. It is compiled only with -tags faultinject, and even then does
// nothing unless the process runs with NATSKV_FAULTINJECT=early-expiry in
// its environment (so that `go test -tags faultinject ./natskv` still
// tests the real rules). With both, every lease this Client claims or
// extends expires after half its duration: a claim that returned nil no
// longer holds for its whole duration, and another holder can take the
// lease while the first one is still guaranteed it.
//
// Never ship a binary built with this tag.

package natskv

import (
	"os"
	"sync"
)

// faultEnv names the environment variable that turns the fault on, and
// faultEarlyExpiry its value.
const (
	faultEnv         = "NATSKV_FAULTINJECT"
	faultEarlyExpiry = "early-expiry"
)

// earlyExpiryFault reports whether leases should expire early. It reads
// the environment once, on first use (no init).
var earlyExpiryFault = sync.OnceValue(func() bool {
	return os.Getenv(faultEnv) == faultEarlyExpiry
})
