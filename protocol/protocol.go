// Package protocol is what travels between leaseagent and its clients on
// NATS: the subjects, how bodies are encoded, and how results map onto
// errors. docs/protocol.md describes the same for other languages.
//
// Requests go to <prefix>.<operation>.<namespace>; events are published on
// <prefix>.<kind>.<namespace>.<lease>. Names in subjects are escaped by
// natskv.EscapeName: plain names (ASCII letters, digits, '-', '_') appear as
// they are.
package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
)

// DefaultPrefix begins every subject unless configured otherwise.
const DefaultPrefix = "lease"

// Operations: the second token of a request subject.
const (
	OpClaim   = "claim"   // messages.ClaimRequest -> messages.ClaimReply
	OpCheck   = "check"   // messages.CheckRequest -> messages.CheckReply
	OpList    = "list"    // messages.ListRequest -> messages.ListReply
	OpRelease = "release" // messages.ReleaseRequest -> messages.ReleaseReply
	OpState   = "state"   // messages.StateRequest -> messages.StateReply
)

// Operations lists every operation, in the order documented.
var Operations = []string{OpClaim, OpCheck, OpList, OpRelease, OpState}

// Event kinds: the second token of an event subject.
const (
	EventExpired = "expired" // messages.ExpiredEvent
	EventClaimed = "claimed" // messages.ClaimedEvent
)

// ValidPrefix reports whether p can begin subjects: one or more
// dot-separated tokens of plain characters (no wildcards, no escapes).
func ValidPrefix(p string) bool {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || natskv.EscapeName(tok) != tok {
			return false
		}
	}
	return true
}

// RequestSubject returns the subject of an operation on a namespace.
func RequestSubject(prefix, op, namespace string) string {
	return prefix + "." + op + "." + natskv.EscapeName(namespace)
}

// EventSubject returns the subject of an event about a lease.
func EventSubject(prefix, kind, namespace, leaseName string) string {
	return prefix + "." + kind + "." + natskv.EscapeName(namespace) + "." + natskv.EscapeName(leaseName)
}

// Bodies are protobuf, unless a request carries the header
// Content-Type: application/json (see IsJSON); then the request is read,
// and its reply written, as protobuf's JSON mapping (protojson). A JSON
// reply carries that header, exactly as written here.
const (
	HeaderContentType = "Content-Type"
	ContentTypeJSON   = "application/json"
)

// IsJSON reports whether a request with headers h asks for JSON: it has a
// Content-Type header, its name in any case, whose media type is
// application/json in any case, with or without parameters such as
// charset=utf-8. Clients in other languages write headers as HTTP does,
// where names and media types are case-insensitive; a JSON body taken for
// protobuf would get a binary error its sender cannot read. (nats.Header
// is a map[string][]string.)
func IsJSON(h map[string][]string) bool {
	if len(h) == 0 {
		return false
	}
	v, ok := h[HeaderContentType]
	if !ok {
		for k, vs := range h {
			if strings.EqualFold(k, HeaderContentType) {
				v, ok = vs, true
				break
			}
		}
	}
	if !ok || len(v) == 0 {
		return false
	}
	mediaType, _, _ := strings.Cut(v[0], ";")
	return strings.EqualFold(strings.TrimSpace(mediaType), ContentTypeJSON)
}

// Decode reads a body into m. Unknown fields are an error in both
// encodings: a field this agent does not know would be silently ignored.
// An empty body (in JSON: nothing but white space) is m with every field
// at its default, in both encodings, as protobuf reads it.
func Decode(data []byte, json bool, m proto.Message) error {
	if json {
		if len(bytes.TrimSpace(data)) == 0 {
			proto.Reset(m)
			return nil
		}
		if err := protojson.Unmarshal(data, m); err != nil {
			return fmt.Errorf("malformed JSON body: %w", err)
		}
		return nil
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("malformed protobuf body: %w", err)
	}
	if unknown := m.ProtoReflect().GetUnknown(); len(unknown) > 0 {
		return fmt.Errorf("protobuf body has %d bytes of unknown fields", len(unknown))
	}
	return nil
}

// Encode writes m as a body.
func Encode(m proto.Message, json bool) ([]byte, error) {
	if json {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

// Errors for the results that package lease has no error for.
var (
	// ErrInvalidArgument means a request was malformed or named something
	// invalid; nothing changed.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrUnavailable means the request could not be served now; it may be
	// retried, and allows no inference about who holds the lease.
	ErrUnavailable = errors.New("lease service unavailable")

	// ErrInternal means the agent failed in a way that is not the caller's
	// fault.
	ErrInternal = errors.New("lease service internal error")

	// ErrRefused means the agent refused the request before acting on it
	// (too many requests in flight, its namespace changing owners): nothing
	// was done, so the request may be sent again whatever its operation, a
	// release too. An error that wraps it wraps ErrUnavailable as well;
	// see Refused.
	ErrRefused = errors.New("request refused before it was acted on")
)

// Refused returns err, which must wrap ErrUnavailable, marked as a refusal
// before anything was done: it wraps ErrRefused too, and reads as err.
// Status reports it as CODE_UNAVAILABLE with refused set.
func Refused(err error) error {
	return &refusedError{err: err}
}

type refusedError struct{ err error }

func (e *refusedError) Error() string   { return e.err.Error() }
func (e *refusedError) Unwrap() []error { return []error{e.err, ErrRefused} }

// Err returns the error a status stands for, nil for CODE_OK. The error
// wraps the sentinel of its code (and ErrRefused for a refused
// CODE_UNAVAILABLE) and carries the status's message.
func Err(s *messages.Status) error {
	var sentinel error
	switch s.GetCode() {
	case messages.Code_CODE_OK:
		return nil
	case messages.Code_CODE_DENIED:
		sentinel = lease.ErrClaimDenied
	case messages.Code_CODE_NOT_HELD:
		sentinel = lease.ErrNotHeld
	case messages.Code_CODE_INVALID_ARGUMENT:
		sentinel = ErrInvalidArgument
	case messages.Code_CODE_UNAVAILABLE:
		sentinel = ErrUnavailable
	default:
		sentinel = ErrInternal
	}
	var err error = sentinel
	if s.GetMessage() != "" {
		err = &statusError{sentinel: sentinel, msg: s.GetMessage()}
	}
	if s.GetRefused() && sentinel == ErrUnavailable {
		return Refused(err)
	}
	return err
}

// Status returns the status that reports err (nil: CODE_OK). Errors that
// wrap none of the known sentinels are CODE_INTERNAL. The message is err's
// text made valid UTF-8, each invalid byte sequence replaced by U+FFFD: an
// error may quote raw bytes of a request, and a string field that is not
// UTF-8 would make the reply impossible to encode.
func Status(err error) *messages.Status {
	code := messages.Code_CODE_INTERNAL
	switch {
	case err == nil:
		return &messages.Status{Code: messages.Code_CODE_OK}
	case errors.Is(err, lease.ErrClaimDenied):
		code = messages.Code_CODE_DENIED
	case errors.Is(err, lease.ErrNotHeld):
		code = messages.Code_CODE_NOT_HELD
	case errors.Is(err, ErrInvalidArgument):
		code = messages.Code_CODE_INVALID_ARGUMENT
	case errors.Is(err, ErrUnavailable):
		code = messages.Code_CODE_UNAVAILABLE
	}
	return &messages.Status{
		Code:    code,
		Message: strings.ToValidUTF8(err.Error(), "\uFFFD"),
		Refused: code == messages.Code_CODE_UNAVAILABLE && errors.Is(err, ErrRefused),
	}
}

// statusError is an error received from the agent: its text is the
// agent's, and it matches its code's sentinel with errors.Is.
type statusError struct {
	sentinel error
	msg      string
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.sentinel }
