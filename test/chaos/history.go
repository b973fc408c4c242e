package chaos

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind uint8

// The kinds of operations.
const (
	// OpClaim claims a lease for a holder, or extends it (client's Claim).
	OpClaim Kind = iota + 1
	// OpCheck asks whether a holder holds a lease, with a *natskv.Fence.
	OpCheck
	// OpRelease gives a lease up.
	OpRelease
	// OpWait is WaitUntilExpired.
	OpWait
)

func (k Kind) String() string {
	switch k {
	case OpClaim:
		return "claim"
	case OpCheck:
		return "check"
	case OpRelease:
		return "release"
	case OpWait:
		return "wait"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Result is how an operation ended.
type Result uint8

// The results.
const (
	// OK: the claim, check (held), release or wait succeeded.
	OK Result = iota + 1
	// Denied: a claim got lease.ErrClaimDenied.
	Denied
	// NotHeld: a check or release got lease.ErrNotHeld.
	NotHeld
	// Failed: any other error; the outcome is unknown.
	Failed
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case Denied:
		return "denied"
	case NotHeld:
		return "not-held"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("result(%d)", r)
}

// Op is one operation as a client saw it. Times are offsets from the start
// of the run on this process's monotonic clock.
type Op struct {
	// ID numbers the operation in its History (set by Recorder.Add).
	ID int
	// Client is the client (goroutine, NATS connection) that ran it.
	Client int
	Kind   Kind
	Lease  string
	// Holder is who claims, checks or releases; empty for Wait.
	Holder string
	// Duration is the duration a Claim asked for.
	Duration time.Duration
	// Start is just before the call, End just after it returned.
	Start, End time.Duration
	Result     Result
	// Token is the fencing token, if known: from a Check that said held,
	// or, for a successful Claim, from the Check its client made right
	// after it.
	Token uint64
	// Err is the error of a Failed operation.
	Err string
}

// guarantee returns when a successful claim's guarantee runs out, ignoring
// releases.
func (o *Op) guarantee() time.Duration { return o.Start + o.Duration }

func (o Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d client %d: %s %s", o.ID, o.Client, o.Kind, o.Lease)
	if o.Holder != "" {
		fmt.Fprintf(&b, " holder=%s", o.Holder)
	}
	if o.Kind == OpClaim {
		fmt.Fprintf(&b, " duration=%v", o.Duration)
	}
	fmt.Fprintf(&b, " [%s, %s] %s", at(o.Start), at(o.End), o.Result)
	if o.Token != 0 {
		fmt.Fprintf(&b, " token=%d", o.Token)
	}
	if o.Err != "" {
		fmt.Fprintf(&b, " (%s)", o.Err)
	}
	return b.String()
}

// at formats an offset from the start of the run.
func at(d time.Duration) string {
	return fmt.Sprintf("+%.3fs", d.Seconds())
}

// Fault is one fault the run injected, from when it began until it was
// healed (for a kill: until the restarted agent said it was serving).
type Fault struct {
	Kind       string
	Detail     string
	Start, End time.Duration
	// Linger is how long after End the fault may still hold a client up:
	// a request lost to a kill or a cut is noticed only when it times
	// out. Config.FaultSlack if zero.
	Linger time.Duration
}

func (f Fault) String() string {
	s := fmt.Sprintf("fault %s [%s, %s]", f.Kind, at(f.Start), at(f.End))
	if f.Detail != "" {
		s += " " + f.Detail
	}
	return s
}

// History is what a run recorded.
type History struct {
	Ops    []Op
	Faults []Fault
}

// Recorder collects a History. It is safe for concurrent use.
type Recorder struct {
	t0 time.Time

	mu sync.Mutex
	h  History
}

// NewRecorder returns a Recorder whose time starts now.
func NewRecorder() *Recorder {
	return &Recorder{t0: time.Now()}
}

// Now returns the time since the Recorder was made, on the monotonic clock.
func (r *Recorder) Now() time.Duration { return time.Since(r.t0) }

// Add records an operation and returns its ID.
func (r *Recorder) Add(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.ID = len(r.h.Ops)
	r.h.Ops = append(r.h.Ops, op)
	return op.ID
}

// AddFault records a fault.
func (r *Recorder) AddFault(f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Faults = append(r.h.Faults, f)
}

// History returns a copy of what has been recorded.
func (r *Recorder) History() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	return History{
		Ops:    append([]Op(nil), r.h.Ops...),
		Faults: append([]Fault(nil), r.h.Faults...),
	}
}
