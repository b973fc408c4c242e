// Package clocktest provides a fake clock.Clock for tests.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/leaseagent/lease/clock"
)

// Fake is a clock.Clock that moves only when Advance or Set is called.
//
// Timer functions run synchronously inside Advance, in order of their due
// times, before Advance returns: a test that advances the clock knows that
// everything the advance triggered has at least been started (for an actor,
// its message has been sent and will be handled before any message the test
// sends next).
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	seq    int
}

// NewFake returns a Fake clock reading t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// AfterFunc schedules fn to run once the fake time reaches Now()+d. With d
// <= 0, fn runs at once, before AfterFunc returns.
func (f *Fake) AfterFunc(d time.Duration, fn func()) clock.Timer {
	if d <= 0 {
		fn()
		return &fakeTimer{clock: f}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	t := &fakeTimer{clock: f, due: f.now.Add(d), fn: fn, seq: f.seq}
	f.timers = append(f.timers, t)
	return t
}

// Advance moves the clock forward by d, running every timer that falls due
// on the way, at its due time, in order.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		panic("clocktest: Advance with a negative duration")
	}
	f.mu.Lock()
	end := f.now.Add(d)
	f.mu.Unlock()
	for {
		f.mu.Lock()
		sort.Slice(f.timers, func(i, j int) bool {
			a, b := f.timers[i], f.timers[j]
			if !a.due.Equal(b.due) {
				return a.due.Before(b.due)
			}
			return a.seq < b.seq
		})
		if len(f.timers) == 0 || f.timers[0].due.After(end) {
			f.now = end
			f.mu.Unlock()
			return
		}
		t := f.timers[0]
		f.timers = f.timers[1:]
		if t.due.After(f.now) {
			f.now = t.due
		}
		f.mu.Unlock()
		t.fn() // outside the lock: fn may use the clock
	}
}

// Set moves the clock to t, forward or back, without running timers: those
// that fell due run at the next Advance. It stands for a process whose
// timers fire late.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

// Timers returns how many timers are pending.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

type fakeTimer struct {
	clock *Fake
	due   time.Time
	fn    func()
	seq   int
}

func (t *fakeTimer) Stop() bool {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, other := range f.timers {
		if other == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return true
		}
	}
	return false
}
