// Package clock is the time source of leaseagent's expiry decisions: the
// current time and timers, on one clock that tests can replace.
//
// Expiry decisions compare readings of one process's clock and never
// readings from different machines, so a Clock must be monotonic. System is;
// package clocktest has a fake that moves only when told to.
package clock

import "time"

// Clock tells the time and runs functions after a delay.
type Clock interface {
	// Now returns the current time.
	Now() time.Time

	// AfterFunc calls f, on a goroutine of the Clock's choosing, once d
	// has passed. f must not block.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending call made by AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened yet, and reports
	// whether it did so.
	Stop() bool
}

// System returns the machine's clock: time.Now, whose readings carry the
// monotonic clock, and time.AfterFunc.
func System() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
