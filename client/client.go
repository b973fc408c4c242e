// Package client reaches a running leaseagent over NATS. A Namespace
// implements lease.Claimer and lease.Checker, with context-taking twins of
// each call, a listing, and a release.
//
// # Guarantees
//
// The promise of lease.Claimer holds as seen from the caller: if Claim
// returns nil, the holder keeps the lease until at least duration after the
// call *started*, whatever the call spent waiting for the agent. Everything built
// on this package (Elect, `leaseagent hold`) computes its deadlines from when
// each Claim started, never from when the reply came.
//
// ErrClaimDenied means the holder does not hold the lease. Any other error
// allows no inference: the claim may or may not have been made. Bad input
// (a name lease.ValidateString refuses, a duration that is not positive or
// above the agent's maximum, a rule of its policy) is refused with an error
// wrapping protocol.ErrInvalidArgument that names the problem; this package
// never returns lease.ErrInvalid, which is for stores (lease.Client).
//
// # Retries
//
// While no agent answers (it is restarting), every call retries with
// backoff until its context ends, then fails with an error wrapping
// protocol.ErrUnavailable. Requests the agent may have acted on (a timeout,
// an "unavailable" reply) are retried only for operations that are safe to
// repeat: claim (a repeat extends), check, list and state. A release is
// retried only when no agent received it, or when the agent refused it
// before acting on it (protocol.ErrRefused: too many requests in flight,
// the agent stopping, its namespace changing owners).
//
// A call whose context has already ended sends nothing (no request, no
// subscription) and returns an error wrapping the context's error.
//
// # Waiting
//
// WaitUntilExpired subscribes to the lease's expired event before asking
// whether the lease is held, so an expiry between the two is not missed;
// it also asks again every WaitPoll, so a lost event (an agent that died
// between removing the lease and announcing it) delays it by at most that.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// Defaults of the options.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultCallTimeout    = 30 * time.Second
	DefaultMinBackoff     = 20 * time.Millisecond
	DefaultMaxBackoff     = time.Second
	DefaultWaitPoll       = 5 * time.Second
)

// Option configures a Client.
type Option func(*options)

type options struct {
	prefix         string
	requestTimeout time.Duration
	callTimeout    time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	waitPoll       time.Duration
}

// WithPrefix sets the subject prefix the agent serves on (default "lease").
func WithPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithRequestTimeout bounds each attempt of a request (default 5s).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.requestTimeout = d } }

// WithCallTimeout bounds the calls that take no context, retries included
// (default 30s). WaitUntilExpired without a context has no bound.
func WithCallTimeout(d time.Duration) Option { return func(o *options) { o.callTimeout = d } }

// WithRetry sets the backoff between attempts: it starts at min and doubles
// up to max (defaults 20ms and 1s). Each wait is drawn at random between
// half the backoff and all of it, so that clients refused together (an
// agent at its bound on requests in flight) do not all come back together.
func WithRetry(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// WithWaitPoll sets how often WaitUntilExpired asks again whether the lease
// is held, in case an event was lost (default 5s).
func WithWaitPoll(d time.Duration) Option { return func(o *options) { o.waitPoll = d } }

func (o options) validate() error {
	switch {
	case o.prefix == "" || !protocol.ValidPrefix(o.prefix):
		return fmt.Errorf("client: prefix %q is not a NATS subject prefix of plain tokens", o.prefix)
	case o.requestTimeout <= 0:
		return fmt.Errorf("client: request timeout %v must be positive", o.requestTimeout)
	case o.callTimeout <= 0:
		return fmt.Errorf("client: call timeout %v must be positive", o.callTimeout)
	case o.minBackoff <= 0 || o.maxBackoff < o.minBackoff:
		return fmt.Errorf("client: retry backoff %v..%v must be positive and in order", o.minBackoff, o.maxBackoff)
	case o.waitPoll <= 0:
		return fmt.Errorf("client: wait poll %v must be positive", o.waitPoll)
	}
	return nil
}

// Client talks to leaseagent over a NATS connection it does not own.
type Client struct {
	nc   *nats.Conn
	opts options
}

// New returns a Client on nc. A nil nc, a nil option or an option out of
// range is an error that names it.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: nil NATS connection")
	}
	o := options{
		prefix:         protocol.DefaultPrefix,
		requestTimeout: DefaultRequestTimeout,
		callTimeout:    DefaultCallTimeout,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		waitPoll:       DefaultWaitPoll,
	}
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("client: option %d of %d is nil", i+1, len(opts))
		}
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Client{nc: nc, opts: o}, nil
}

// Namespace returns the leases of one namespace. An invalid name is
// reported by the calls, as an error wrapping protocol.ErrInvalidArgument,
// before they send anything; so are invalid lease and holder names and
// durations that are not positive. What only the agent knows (its maximum
// duration, its per-namespace policy) is checked by the agent.
func (c *Client) Namespace(name string) *Namespace {
	return &Namespace{c: c, name: name}
}

// Prefix returns the subject prefix the Client uses.
func (c *Client) Prefix() string { return c.opts.prefix }

// call sends one request and decodes its reply into out, retrying as the
// package doc says. It returns the reply's status as an error.
func (c *Client) call(ctx context.Context, op, namespace string, in, out proto.Message, idempotent bool) error {
	if err := natskv.CheckName("namespace", namespace); err != nil {
		return fmt.Errorf("%w: %w", protocol.ErrInvalidArgument, err)
	}
	data, err := proto.Marshal(in)
	if err != nil {
		return fmt.Errorf("%w: encode %s request: %w", protocol.ErrInvalidArgument, op, err)
	}
	subject := protocol.RequestSubject(c.opts.prefix, op, namespace)
	backoff := c.opts.minBackoff
	for {
		attempt, cancel := context.WithTimeout(ctx, c.opts.requestTimeout)
		msg, err := c.nc.RequestMsgWithContext(attempt, &nats.Msg{Subject: subject, Data: data})
		cancel()
		retry := false
		switch {
		case err == nil:
			if err := proto.Unmarshal(msg.Data, out); err != nil {
				return fmt.Errorf("%w: %s reply: %w", protocol.ErrInternal, op, err)
			}
			status := statusOf(out)
			if errors.Is(status, protocol.ErrUnavailable) && (idempotent || errors.Is(status, protocol.ErrRefused)) {
				retry, err = true, status
			} else {
				return status
			}
		case errors.Is(err, nats.ErrNoResponders):
			retry = true
		case ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)):
			retry = idempotent
		}
		if !retry {
			return fmt.Errorf("%w: %s %s: %w", protocol.ErrUnavailable, op, namespace, err)
		}
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %s %s: gave up: %w (last: %v)", protocol.ErrUnavailable, op, namespace, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, c.opts.maxBackoff)
	}
}

// jitter returns a wait drawn at random in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// statusOf returns the error of a reply's status.
func statusOf(m proto.Message) error {
	type withStatus interface{ GetStatus() *messages.Status }
	if r, ok := m.(withStatus); ok {
		return protocol.Err(r.GetStatus())
	}
	return nil
}
