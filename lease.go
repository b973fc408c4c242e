// Package lease defines distributed leases: named, time-bounded rights, each
// held by at most one holder at a time.
//
// This package is the API only: the interfaces a lease manager offers
// (Claimer, Checker, Token), the interface a store offers to a manager
// (Client), the values they exchange (Info, Request, Trapdoor), and the three
// errors callers test for with errors.Is. It imports nothing that talks to a
// network; package natskv stores leases in NATS JetStream KV, package actors
// runs a manager on top of it, and package client reaches a running agent.
//
// # Guarantees
//
// A successful Claim means the holder keeps the lease until at least the
// requested duration after the call *started*; time spent waiting for the
// reply eats into that window, never past it. ErrClaimDenied means the holder
// does not hold the lease. Any other error allows no inference about who holds
// the lease.
//
// A Token's Check is a fact about a moment in the past: by the time the caller
// acts on it, the lease may have moved on. Callers that need to protect work
// from a holder that lost its lease should pass a trapdoor key and use what the
// store hands back (with natskv, a fencing token that strictly increases each
// time a lease changes hands).
//
// Names of leases and holders must satisfy ValidateString.
//
// # Errors
//
// Of the three errors, callers of a Claimer or a Checker test for
// ErrClaimDenied and ErrNotHeld. ErrInvalid passes between a Client (a
// store) and the manager above it, which decides again; it does not reach
// them, and it does not mean bad input. Bad input (a name ValidateString
// refuses, a duration that is not positive) gets an error of the
// implementation's own that names the problem: with package client and
// package actors, one wrapping protocol.ErrInvalidArgument
// (github.com/leaseagent/lease/protocol), which callers test for instead.
package lease

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// ErrClaimDenied is returned by Claimer.Claim when another holder holds the
// lease. It guarantees the caller does not hold it.
var ErrClaimDenied = errors.New("lease claim denied")

// ErrNotHeld is returned when a holder does not hold a lease: by Token.Check,
// and by operations such as release that only a holder may perform.
var ErrNotHeld = errors.New("lease not held")

// ErrInvalid is returned by a Client when the operation cannot succeed against
// the latest state of the store: someone else wrote first, or the lease is not
// in the state the operation needs. The Client's view has been brought up to
// date by the time ErrInvalid is returned, so the caller can decide again.
// It is not for invalid arguments (a bad name or duration): those get an
// error naming the problem, which a manager wraps in an error of its own
// (package actors: ErrInvalidArgument).
var ErrInvalid = errors.New("invalid lease operation")

// Claimer acquires leases and waits for them to be free.
type Claimer interface {
	// Claim acquires the named lease for the holder, or extends it if the
	// holder already holds it. On nil, the holder keeps the lease until at
	// least duration after the call started. On ErrClaimDenied, someone else
	// holds it. Any other error allows no inference.
	Claim(leaseName, holderName string, duration time.Duration) error

	// WaitUntilExpired returns nil once the named lease is not held. Any other
	// error allows no inference.
	WaitUntilExpired(leaseName string) error
}

// Checker answers questions about who holds a lease.
type Checker interface {
	// Token returns a Token that reports, each time it is checked, whether the
	// holder holds the named lease.
	Token(leaseName, holderName string) Token
}

// Token is a question that can be asked again and again: does this holder
// hold this lease?
type Token interface {
	// Check returns ErrNotHeld if the holder does not hold the lease. A nil
	// result with a nil trapdoorKey says the holder held the lease when the
	// check was made.
	//
	// A non-nil trapdoorKey is handed, while the lease is held, to the Trapdoor
	// of the Client that stores the lease; what it accepts and what it does
	// with it is that Client's to document. An unsupported key is an error.
	Check(trapdoorKey interface{}) error
}

// Client stores the leases of one namespace for a manager. Its view of the
// store is a cache: it changes only through the Client's own writes and
// Refresh.
//
// A Client is not safe for concurrent use; a manager owns it and calls it from
// one goroutine at a time.
type Client interface {
	// ClaimLease records the holder of a lease that is not held. It returns
	// ErrInvalid if the lease is held.
	ClaimLease(leaseName string, request Request) error

	// ExtendLease moves the expiry of a lease held by request.Holder to no
	// earlier than request.Duration from now. It returns ErrInvalid if the
	// lease is not held by that holder.
	ExtendLease(leaseName string, request Request) error

	// ExpireLease removes a lease whose expiry has passed. It returns
	// ErrInvalid if the lease is missing, has not expired, or changed since
	// the Client last saw it.
	ExpireLease(leaseName string) error

	// Leases returns a snapshot of the leases the Client knows of, by name.
	// Changing the map changes nothing inside the Client.
	Leases() map[string]Info

	// Refresh reloads the Client's view from the store.
	Refresh() error
}

// Info is what a Client knows of one held lease.
type Info struct {
	// Holder is the name of the holder.
	Holder string

	// Expiry is the earliest moment the lease may be expired, on the clock
	// of the Client that reports it. It is not a wall-clock time that another
	// process can compare with its own.
	Expiry time.Time

	// Trapdoor gives a trapdoor key access to the record that made Holder
	// the holder. It must be called only while the lease is known to be held
	// by Holder.
	Trapdoor Trapdoor
}

// Trapdoor hands store-specific facts about a held lease to a key whose type
// the store documents. A nil key does nothing and returns nil.
type Trapdoor func(key interface{}) error

// LockedTrapdoor is a Trapdoor for stores that give nothing away: nil for a
// nil key, an error for any other.
func LockedTrapdoor(key interface{}) error {
	if key != nil {
		return fmt.Errorf("lease: trapdoor key of type %T not supported", key)
	}
	return nil
}

// Request is a holder's wish to hold a lease for a duration.
type Request struct {
	// Holder names the holder that will hold the lease.
	Holder string

	// Duration is how long, from the start of the operation, the lease
	// must stay held.
	Duration time.Duration
}

// Validate returns an error that names the problem if the holder is not a
// valid name or the duration is not positive.
func (r Request) Validate() error {
	if err := ValidateString(r.Holder); err != nil {
		return fmt.Errorf("invalid holder: %w", err)
	}
	if r.Duration <= 0 {
		return fmt.Errorf("invalid duration %v: must be positive", r.Duration)
	}
	return nil
}

// ValidateString returns an error if s is not a valid lease, holder or
// namespace name: it must be non-empty, contain no white space and none of
// the characters '.', '#' and '$'. Any other characters, including '/', ':'
// and non-ASCII letters, are allowed.
func ValidateString(s string) error {
	if s == "" {
		return errors.New("string is empty")
	}
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return fmt.Errorf("string %q contains white space at byte %d", s, i)
	}
	if i := strings.IndexAny(s, ".#$"); i >= 0 {
		return fmt.Errorf("string %q contains %q at byte %d", s, s[i], i)
	}
	return nil
}
