// Package agent serves the lease protocol on NATS: it receives requests on
// <prefix>.<operation>.<namespace>, hands them to an actors.Manager, and
// replies when the Manager answers. docs/protocol.md describes the protocol.
//
// The service is a NATS micro service named "leaseagent" with one endpoint
// per operation, all in the queue group "leaseagent", so several agents can
// share the load and `nats micro ls/info/stats` show them. A request for an
// operation that does not exist gets an error reply too.
//
// Handlers never wait for the Manager, because a NATS subscription
// delivers one message at a time and a waiting handler would serialise the
// service. Claims, checks and releases for a namespace this agent answers
// for are handed to the Manager with a function that replies, which the
// namespace's actor calls when the answer is known: the reply is sent from
// where the answer arrives and no goroutine waits for it. Lists, states,
// and requests for a namespace whose ownership is not settled yet each get
// a goroutine. Micro's statistics therefore count requests, not their
// outcomes. A request not answered within Config.RequestTimeout gets
// CODE_UNAVAILABLE; it may still take effect.
//
// # Backpressure
//
// Requests are not queued without bound. At most
// Config.MaxRequestsInflight requests are in flight at once (received and
// not yet answered), and at most Config.MaxNamespaceRequestsInflight of
// one namespace, so that one namespace cannot take the agent from the
// others. A list counts as an eighth of the namespace's bound: its work
// (a page of up to the max payload encoded and sent) runs outside the
// namespace's actor and in parallel with the other lists, so a few at
// once keep the CPU as busy as many, and more only slow every other
// namespace. A request beyond a bound is answered at once with
// CODE_UNAVAILABLE naming it, and with the status's refused set: nothing
// was done, and the caller may send it again, with backoff, whatever it
// asks (protocol.ErrRefused). These refusals count in metrics
// (Metrics.Refused) and are logged at most every 10 s, not each. Other
// replies carry refused too when nothing was done: a request beyond the
// Manager's MaxNamespaces, one this agent could not route to its
// namespace's owner (it is stopping, the ownership is changing hands), and
// one forwarded to it after it stopped owning the namespace; not a
// forward that failed or timed out, which may have taken effect.
//
// # Several agents on one bucket
//
// With Config.Ownership set, agents that share a bucket share its
// namespaces: each namespace is served by one agent at a time, its owner,
// and the others forward its requests to the owner, which answers the
// caller through them. Ownership is itself a lease, in the reserved
// namespace OwnersNamespace, held by the owner's agent ID and renewed
// every Ownership.Renew; the first agent to receive a request for a
// namespace nobody owns takes it. Guarantees, assuming agents' clocks run
// at rates that differ by less than Ownership.ClockDriftRate:
//
//   - At most one agent answers for a namespace at any moment. An owner
//     answers only until its last successful renewal began plus
//     Duration*(1-ClockDriftRate), checked before and after each request
//     and before each store write its namespace's actor makes
//     (actors.Manager.SetWriteGuard); once that passes without a renewal,
//     it unloads the namespace. Another
//     agent takes the namespace only after the ownership lease has expired
//     by the clock rule, Duration*(1+ClockDriftRate) after it first saw the
//     lease's latest revision.
//   - A new owner loads the namespace from the store and treats every
//     lease in it by the clock rule, so a takeover never shortens a
//     holder's guarantee. Store writes stay revision-checked: a write the
//     old owner had in flight cannot overwrite the new owner's.
//   - When an owner dies, another agent takes its namespaces over within
//     Duration*(1+ClockDriftRate) plus Renew (how late it may see the last
//     renewal) plus a write, even if no request comes: their leases must
//     still expire and their waiters wake.
//     Meanwhile requests for them get "no responders" and callers retry.
//   - An agent that stops (Service.Stop) releases its ownerships at once.
//   - Agent IDs must be unique among live agents: Start refuses to start
//     when another agent answers to its ID.
//
// Limits: a request that reached the owner just before its ownership ran
// out is answered "unavailable" and may have taken effect; callers retry
// (package client does). An agent that has lost its ownership may still
// publish an expiry event for a lease it rightly expired.
//
// Bad input (an empty or malformed body, unknown fields, invalid or
// over-long names, a missing, non-positive or too long duration, anything
// the Manager's policy refuses) gets a CODE_INVALID_ARGUMENT reply whose
// message names the problem; nothing changes. The service does not
// authenticate requests: that is NATS's job (docs/security.md).
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// ServiceName is the micro service's name, and its queue group.
const ServiceName = "leaseagent"

// Keys of the micro service's metadata, which `nats micro info` and
// `leaseagent status` show: the subject prefix, and the agent's ID if it
// shares its bucket (Ownership).
const (
	MetadataPrefix  = "prefix"
	MetadataAgentID = "agent_id"
)

// Config configures a Service.
type Config struct {
	// Conn is the connection requests arrive on; required.
	Conn *nats.Conn
	// Manager serves the requests; required. The Service does not stop it.
	Manager *actors.Manager
	// Prefix begins the request subjects; protocol.DefaultPrefix if empty.
	// It must be the Manager's prefix, so that clients find the events.
	Prefix string
	// Version is the service version shown by `nats micro info`, in
	// semantic-version form; "0.0.0-dev" if empty.
	Version string
	// RequestTimeout bounds how long one request may take; 30s if zero.
	RequestTimeout time.Duration
	// Logger receives the service's logs; slog.Default() if nil.
	Logger *slog.Logger
	// Metrics records request latencies; nil records nothing.
	Metrics *metrics.Metrics
	// MaxRequestsInflight bounds the requests in flight (received and
	// not yet answered) at once, all namespaces together, so that clients
	// sending faster than the agent answers cannot exhaust its memory: a
	// request beyond it is refused at once with CODE_UNAVAILABLE, and
	// nothing is done. DefaultMaxRequestsInflight if zero.
	MaxRequestsInflight int
	// MaxNamespaceRequestsInflight bounds the requests of one namespace
	// in flight at once in the same way, so that one namespace cannot
	// take the whole of MaxRequestsInflight from the others. Zero means
	// DefaultMaxNamespaceRequestsInflight, or MaxRequestsInflight if that
	// is smaller; it may not exceed MaxRequestsInflight.
	MaxNamespaceRequestsInflight int
	// Ownership, if set, shares the namespaces with the other agents on
	// the bucket: this agent answers only for the namespaces it owns and
	// forwards other requests to their owners. If nil, this agent answers
	// for every namespace, which is right only if it is the bucket's only
	// agent.
	Ownership *Ownership
}

// Validate returns an error naming the first field that is not valid.
func (c Config) Validate() error {
	maxRequests := cmp.Or(c.MaxRequestsInflight, DefaultMaxRequestsInflight)
	switch {
	case c.Conn == nil:
		return errors.New("agent: Config.Conn: must not be nil")
	case c.Manager == nil:
		return errors.New("agent: Config.Manager: must not be nil")
	case c.RequestTimeout < 0:
		return fmt.Errorf("agent: Config.RequestTimeout: %v is negative", c.RequestTimeout)
	case c.MaxRequestsInflight < 0:
		return fmt.Errorf("agent: Config.MaxRequestsInflight: %d is negative", c.MaxRequestsInflight)
	case c.MaxNamespaceRequestsInflight < 0:
		return fmt.Errorf("agent: Config.MaxNamespaceRequestsInflight: %d is negative", c.MaxNamespaceRequestsInflight)
	case c.MaxNamespaceRequestsInflight > maxRequests:
		return fmt.Errorf("agent: Config.MaxNamespaceRequestsInflight: %d exceeds MaxRequestsInflight (%d)",
			c.MaxNamespaceRequestsInflight, maxRequests)
	case c.Prefix != "" && !protocol.ValidPrefix(c.Prefix):
		return fmt.Errorf("agent: Config.Prefix: %q is not a valid subject prefix", c.Prefix)
	}
	if c.Ownership != nil {
		return c.Ownership.Validate()
	}
	return nil
}

// Service is the running protocol service.
type Service struct {
	cfg Config
	svc micro.Service
	// malformed answers requests on malformed subjects under the prefix.
	malformed []*nats.Subscription
	handlers  map[string]handler  // by operation: those that wait
	answerers map[string]answerer // by operation: those that do not
	owners    *owners             // nil without Ownership
	toMe      *nats.Subscription  // requests forwarded to this agent
	pings     *nats.Subscription  // answers pings on this agent's ID
	buckets   *nats.Subscription  // answers which bucket this agent uses
	run       string              // this run's nonce, in its answers to pings
	ownersWG  sync.WaitGroup
	stopOwn   context.CancelFunc
	ctx       context.Context
	cancel    context.CancelFunc
	inflight  sync.WaitGroup // of the requests in flight, for Stop
	limits    *inflight      // counts them, and refuses those beyond the bounds
	stopOnce  sync.Once
	stopErr   error
}

// Start starts serving.
func Start(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = protocol.DefaultPrefix
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0-dev"
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.MaxRequestsInflight = cmp.Or(cfg.MaxRequestsInflight, DefaultMaxRequestsInflight)
	cfg.MaxNamespaceRequestsInflight = cmp.Or(cfg.MaxNamespaceRequestsInflight,
		min(DefaultMaxNamespaceRequestsInflight, cfg.MaxRequestsInflight))
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, ctx: ctx, cancel: cancel,
		limits: newInflight(cfg.MaxRequestsInflight, cfg.MaxNamespaceRequestsInflight)}
	s.handlers = map[string]handler{
		protocol.OpList:  s.list,
		protocol.OpState: s.state,
	}
	s.answerers = map[string]answerer{
		protocol.OpClaim:   s.claim,
		protocol.OpCheck:   s.check,
		protocol.OpRelease: s.release,
	}
	// Agents on one prefix share its requests: they must share a bucket.
	if err := s.claimPrefix(); err != nil {
		_ = s.Stop()
		return nil, err
	}
	// Ownership first: a request taken before it is in place would be
	// answered without asking who owns its namespace.
	if cfg.Ownership != nil {
		if err := s.startOwnership(); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	mc := micro.Config{
		Name:        ServiceName,
		Version:     cfg.Version,
		Description: "distributed leases",
		QueueGroup:  ServiceName,
		Metadata:    map[string]string{MetadataPrefix: cfg.Prefix},
	}
	if cfg.Ownership != nil {
		mc.Metadata[MetadataAgentID] = cfg.Ownership.AgentID
	}
	svc, err := micro.AddService(cfg.Conn, mc)
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("agent: add service: %w", err)
	}
	s.svc = svc
	for _, op := range protocol.Operations {
		err := svc.AddEndpoint(op, micro.HandlerFunc(func(r micro.Request) { s.serve(op, r) }),
			micro.WithEndpointSubject(cfg.Prefix+"."+op+".*"))
		if err != nil {
			_ = s.Stop()
			return nil, fmt.Errorf("agent: add endpoint %s: %w", op, err)
		}
	}
	// Malformed request subjects get an answer naming the problem. Only
	// those that no endpoint and no event can have: a subscription
	// overlapping the endpoints or the events would be sent every request
	// and every event as well (measured: a third more messages per claim).
	// So a request on an unknown operation finds no responders. Its own
	// queue group: in the service's group it would take requests away from
	// the endpoints.
	for _, subject := range malformedSubjects(cfg.Prefix) {
		sub, err := cfg.Conn.QueueSubscribe(subject, ServiceName+"-malformed", s.answerMalformed)
		if err != nil {
			_ = s.Stop()
			return nil, fmt.Errorf("agent: subscribe %s: %w", subject, err)
		}
		s.malformed = append(s.malformed, sub)
	}
	// Once Start returns, the server knows every subscription: requests
	// sent from then on find the service.
	if err := cfg.Conn.Flush(); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("agent: flush subscriptions: %w", err)
	}
	return s, nil
}

// forwardSubject returns the subject requests are forwarded to an agent on:
// _leaseagent.<prefix>.<agent ID>.<operation>.<namespace>. It lies outside
// <prefix>.>, where every agent listens for unknown operations: so a
// request forwarded to an agent that has gone finds no responders, and the
// caller learns it at once.
func forwardSubject(prefix, agentID, op, nsToken string) string {
	return forwardRoot + "." + prefix + "." + agentID + "." + op + "." + nsToken
}

// forwardRoot begins the subjects of forwarded requests.
const forwardRoot = "_leaseagent"

// pingOp is the operation agents ask on to find whether an agent ID is
// taken.
const pingOp = "ping"

// startOwnership refuses to start if another agent answers to this
// agent's ID, then subscribes to the requests forwarded to it and starts
// renewing ownership.
func (s *Service) startOwnership() error {
	id := s.cfg.Ownership.AgentID
	if err := s.claimID(id); err != nil {
		return err
	}
	o, err := newOwners(*s.cfg.Ownership, s.cfg.Manager, s.cfg.Logger.With("agent", id))
	if err != nil {
		return err
	}
	// Read who owns what before answering anything: from here on, the
	// clock rule runs for every ownership lease seen.
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	err = o.refresh(ctx)
	cancel()
	if err != nil {
		return err
	}
	s.owners = o
	s.cfg.Manager.SetWriteGuard(o.mayWrite)
	s.toMe, err = s.cfg.Conn.Subscribe(forwardRoot+"."+s.cfg.Prefix+"."+id+".>", s.forwarded)
	if err != nil {
		return fmt.Errorf("agent: subscribe to forwarded requests: %w", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	s.stopOwn = cancel
	s.ownersWG.Go(func() { o.run(ctx) })
	return nil
}

// claimID returns an error if another agent runs with this agent's ID,
// and from then on answers pings on it.
//
// It asks twice. First with a plain request, as before any answer of its
// own: an agent that has run for a while answers it, if need be slowly.
// Then it answers pings on the ID, with a nonce of this run, and asks
// again: of two agents started together, both asking before either
// answered, the second to answer hears the first.
func (s *Service) claimID(id string) error {
	nc, subject := s.cfg.Conn, forwardSubject(s.cfg.Prefix, id, pingOp, "_")
	switch _, err := nc.Request(subject, nil, pingTimeout); {
	case err == nil:
		return s.idTaken()
	case errors.Is(err, nats.ErrTimeout):
		// Something listens and does not answer. It may be an agent with
		// this ID that is paused (a stopped process, a frozen VM), which
		// would serve again beside this one: refuse, loudly.
		return fmt.Errorf("agent: Ownership.AgentID: something subscribes to %s but did not answer within %v: "+
			"an agent running as %q and paused, a connection of a dead one the server has not dropped yet, or a tap such as 'nats sub >'; "+
			"start again once it is gone: %w", subject, pingTimeout, id, err)
	case !errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("agent: ask whether agent ID %q is taken: %w", id, err)
	}
	s.run = nuid.Next()
	var err error
	s.pings, err = nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(s.run)) })
	if err != nil {
		return fmt.Errorf("agent: answer pings on agent ID %q: %w", id, err)
	}
	if err = s.pingID(subject); err != nil {
		_ = s.pings.Unsubscribe()
		s.pings = nil
		return err
	}
	return nil
}

func (s *Service) idTaken() error {
	return fmt.Errorf("agent: Ownership.AgentID: another agent already runs as %q on this bucket's NATS; give each agent its own ID", s.cfg.Ownership.AgentID)
}

// bucketOp is the last token of the subject every agent answers with the
// name of its bucket: _leaseagent.<prefix>.bucket. Three tokens, so no
// agent's forwarded requests or pings (five) are sent there.
const bucketOp = "bucket"

// claimPrefix returns an error if an agent with this prefix uses another
// bucket, and from then on answers which bucket this agent uses. Agents
// on one prefix take each other's requests (one queue group), so agents
// on two buckets would each grant, from its own bucket, leases the other
// holds. As in claimID it answers before it asks: of two started
// together, at least the second hears the first.
func (s *Service) claimPrefix() error {
	nc, subject := s.cfg.Conn, forwardRoot+"."+s.cfg.Prefix+"."+bucketOp
	bucket := s.cfg.Manager.Bucket().Name()
	var err error
	s.buckets, err = nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(bucket)) })
	if err != nil {
		return fmt.Errorf("agent: answer on %s: %w", subject, err)
	}
	return askAgents(nc, subject, sameBucket(s.cfg.Prefix, bucket))
}

// CheckBucket returns the error Start would fail with because agents that
// answer on prefix use a bucket other than bucket, or nil if none does
// (or none answers within a few seconds). Call it before opening or
// creating bucket, so that an agent refused for it creates nothing:
// Start checks again, and then answers the question itself.
func CheckBucket(nc *nats.Conn, prefix, bucket string) error {
	return askAgents(nc, forwardRoot+"."+prefix+"."+bucketOp, sameBucket(prefix, bucket))
}

// sameBucket checks agents' answers of which bucket they use.
func sameBucket(prefix, bucket string) func(answer []byte) error {
	return func(answer []byte) error {
		if string(answer) != bucket {
			return fmt.Errorf("agent: agents on prefix %q already use bucket %q, not %q: "+
				"they would take this agent's requests and it theirs, each granting leases from its own bucket; "+
				"give each bucket its own prefix (--prefix)", prefix, string(answer), bucket)
		}
		return nil
	}
}

// pingTimeout bounds each ping: a running agent answers well within it.
// On the first ping, no answer within it makes the new agent refuse to
// start (something listens; it may be a paused agent); on the second, it
// means no other agent started at the same moment.
const pingTimeout = 2 * time.Second

// pingAfterOwn is how long, after its own answer, an agent waits for
// others to answer its second ping: agents starting together answer as
// fast, give or take scheduling.
const pingAfterOwn = 100 * time.Millisecond

// pingID pings subject and returns an error if an agent other than this
// run answers (see askAgents).
func (s *Service) pingID(subject string) error {
	return askAgents(s.cfg.Conn, subject, func(answer []byte) error {
		if string(answer) != s.run {
			return s.idTaken()
		}
		return nil
	})
}

// askAgents sends a request to subject, which this agent may answer too,
// and gives every answer to check, until one fails it. After the first
// answer (likely this agent's own, which shows the request went through
// the server) it waits pingAfterOwn more for others. On a connection with
// NoEcho its own answer never comes, and the server's "no responders", or
// pingTimeout, says nobody else is there.
func askAgents(nc *nats.Conn, subject string, check func(answer []byte) error) error {
	inbox := nc.NewRespInbox()
	answers, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("agent: ask %s: %w", subject, err)
	}
	defer func() { _ = answers.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return fmt.Errorf("agent: ask %s: %w", subject, err)
	}
	deadline, heard := time.Now().Add(pingTimeout), false
	for {
		wait := time.Until(deadline)
		if heard {
			wait = min(wait, pingAfterOwn)
		}
		m, err := answers.NextMsg(wait)
		switch {
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders):
			return nil // no other agent answered
		case err != nil:
			return fmt.Errorf("agent: ask %s: %w", subject, err)
		}
		if err := check(m.Data); err != nil {
			return err
		}
		heard = true
	}
}

// Stop stops taking requests, waits for those in progress to be answered
// (or to time out), and returns. It does not stop the Manager.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		for _, sub := range s.malformed {
			errs = append(errs, sub.Drain())
		}
		if s.toMe != nil {
			errs = append(errs, s.toMe.Drain())
		}
		if s.pings != nil {
			errs = append(errs, s.pings.Drain())
		}
		if s.buckets != nil {
			errs = append(errs, s.buckets.Drain())
		}
		if s.svc != nil {
			errs = append(errs, s.svc.Stop())
		}
		s.inflight.Wait()
		s.cancel()
		if s.stopOwn != nil {
			s.stopOwn()
			s.ownersWG.Wait()
			// Nothing answers any more: let the other agents take over now
			// rather than when the ownership leases run out.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.owners.releaseAll(ctx)
			cancel()
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// Owned returns the namespaces this agent owns now, sorted; nil without
// Ownership.
func (s *Service) Owned() []string {
	if s.owners == nil {
		return nil
	}
	return s.owners.ownedNamespaces()
}

// request is one request in progress.
type request struct {
	json      bool
	data      []byte
	namespace string
	weight    int // how many it counts as in flight; 0 until admitted (Service.admit)
}

// serve hands a request on and returns at once.
func (s *Service) serve(op string, r micro.Request) {
	reply := r.Reply()
	if reply == "" {
		return // nobody to answer
	}
	s.dispatch(op, &nats.Msg{Subject: r.Subject(), Reply: reply, Data: r.Data(), Header: nats.Header(r.Headers())}, false)
}

// forwarded serves a request another agent forwarded to this one, as its
// namespace's owner, and answers pings. A forwarded request on a malformed
// subject gets CODE_INVALID_ARGUMENT.
func (s *Service) forwarded(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	// _leaseagent.<prefix>.<id>.<op>.<namespace>
	root := forwardRoot + "." + s.cfg.Prefix + "." + s.cfg.Ownership.AgentID
	tokens := strings.Split(strings.TrimPrefix(m.Subject, root+"."), ".")
	if len(tokens) == 2 && tokens[0] == pingOp {
		return // s.pings answers
	}
	if len(tokens) != 2 || !slices.Contains(protocol.Operations, tokens[0]) {
		// An agent of another version, say: tell it rather than leave it
		// waiting out its timeout.
		err := fmt.Errorf("%w: malformed forwarded request subject %q; forwarded requests go to %s.<operation>.<namespace>, operations: %s",
			protocol.ErrInvalidArgument, m.Subject, root, strings.Join(protocol.Operations, ", "))
		s.respond(m.Reply, protocol.IsJSON(m.Header),
			&messages.ErrorReply{Status: protocol.Status(err)})
		return
	}
	s.dispatch(tokens[0], m, true)
}

// handler serves one operation for a namespace this agent answers for, and
// returns the reply.
type handler func(context.Context, *actors.Namespace, *request) proto.Message

// answerer serves one operation for a namespace this agent answers for
// without waiting: it returns at once, and calls reply once, from where the
// answer arrives (the namespace's actor, mostly), at the latest soon after
// deadline. reply must not block.
type answerer func(n *actors.Namespace, req *request, deadline time.Time, reply func(proto.Message))

// dispatch serves a request: answers it if this agent owns the namespace
// (taking ownership if nobody has it), or forwards it to the owner unless
// it was forwarded already. Claims, checks and releases for a namespace
// this agent owns now go to the Manager with a function that replies: no
// goroutine waits for them. Any other request gets a goroutine.
func (s *Service) dispatch(op string, m *nats.Msg, wasForwarded bool) {
	req := &request{
		json: protocol.IsJSON(m.Header),
		data: m.Data,
	}
	s.inflight.Add(1)
	start := time.Now()
	ns, err := namespaceOf(m.Subject, s.cfg.Prefix)
	if err != nil {
		s.reply(op, m.Reply, req, 0, failure(op, err), start)
		return
	}
	req.namespace = ns
	// A namespace the Manager refuses outright gets no ownership write.
	if err := s.cfg.Manager.Namespace(ns).Refused(); err != nil {
		s.reply(op, m.Reply, req, 0, failure(op, err), start)
		return
	}
	if err := s.admit(op, req); err != nil {
		s.reply(op, m.Reply, req, 0, failure(op, err), start)
		return
	}
	answer := s.answerers[op]
	if answer != nil {
		if tenure, ok := s.ownedNow(ns); ok {
			answer(s.cfg.Manager.Namespace(ns), req, start.Add(s.cfg.RequestTimeout), func(out proto.Message) {
				s.reply(op, m.Reply, req, tenure, out, start)
			})
			return
		}
	}
	go func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
		defer cancel()
		var rt route
		if s.owners != nil {
			// A request the Manager would refuse gets no ownership write:
			// it changes nothing (an owner that forwards it to the
			// owner checks it there again).
			if err := s.refusal(op, s.cfg.Manager.Namespace(ns), req); err != nil {
				s.reply(op, m.Reply, req, 0, failure(op, err), start)
				return
			}
			var err error
			if rt, err = s.owners.route(ctx, ns); err != nil {
				s.reply(op, m.Reply, req, 0, failure(op, err), start)
				return
			}
			if !rt.local {
				s.forward(ctx, op, m, req, rt.owner, wasForwarded)
				s.done(op, req, start)
				return
			}
		}
		var out proto.Message
		if answer != nil {
			deadline, _ := ctx.Deadline()
			answered := make(chan proto.Message, 1)
			answer(s.cfg.Manager.Namespace(ns), req, deadline, func(out proto.Message) { answered <- out })
			out = <-answered
		} else {
			out = s.handlers[op](ctx, s.cfg.Manager.Namespace(ns), req)
		}
		if s.ctx.Err() != nil && ctx.Err() != nil {
			// Stop cut the request short (it came in as the service was
			// stopping): its outcome is unknown, and another agent, or this
			// one restarted, may serve the retry.
			out = failure(op, fmt.Errorf("%w: this agent is stopping; retry", protocol.ErrUnavailable))
		}
		s.reply(op, m.Reply, req, rt.tenure, out, start)
	}()
}

// ownedNow reports whether this agent answers for ns now, without waiting,
// and in which tenure: always without Ownership.
func (s *Service) ownedNow(ns string) (tenure uint64, ok bool) {
	if s.owners == nil {
		return 0, true
	}
	return s.owners.ownedNow(ns)
}

// reply sends a request's reply and counts the request done. A reply
// from the state of a namespace this agent owned in tenure (never 0) is
// replaced by an error if the agent has lost it since.
func (s *Service) reply(op, to string, req *request, tenure uint64, out proto.Message, start time.Time) {
	if s.owners != nil && tenure != 0 && !s.owners.holds(req.namespace, tenure) {
		// The answer may come from state another owner has changed.
		out = failure(op, fmt.Errorf("%w: this agent stopped owning namespace %q while answering; retry", protocol.ErrUnavailable, req.namespace))
	}
	s.free(req)
	s.respond(to, req.json, out)
	s.done(op, req, start)
}

// done counts a request answered.
func (s *Service) done(op string, req *request, start time.Time) {
	s.cfg.Metrics.Request(op, time.Since(start))
	s.inflight.Done()
}

// free frees the place req took among the requests in flight, if it has
// one. reply and forward free it just before the caller has its answer:
// a caller that sends again at once finds the place free.
func (s *Service) free(req *request) {
	if req.weight > 0 {
		s.limits.done(req.namespace, req.weight)
	}
}

// forward hands a request to the agent that owns its namespace and relays
// the answer. If that agent has gone, the caller is told there are no
// responders, as if it had asked the owner itself, and retries. A request
// that was forwarded already is not forwarded again: ownership moved while
// it travelled, and the caller is told to retry.
func (s *Service) forward(ctx context.Context, op string, m *nats.Msg, req *request, owner string, wasForwarded bool) {
	ns := req.namespace
	var (
		answer *nats.Msg
		err    error
	)
	if !wasForwarded {
		answer, err = s.cfg.Conn.RequestMsgWithContext(ctx, &nats.Msg{
			Subject: forwardSubject(s.cfg.Prefix, owner, op, natskv.EscapeName(ns)),
			Header:  m.Header,
			Data:    m.Data,
		})
	}
	s.free(req)
	switch {
	case wasForwarded:
		s.respond(m.Reply, req.json, failure(op, protocol.Refused(fmt.Errorf("%w: namespace %q is owned by agent %q now; retry", protocol.ErrUnavailable, ns, owner))))
		return
	case errors.Is(err, nats.ErrNoResponders):
		// The owner has gone: it received nothing, so any call may retry,
		// and the retry may find the namespace released.
		s.owners.refreshSoon(ctx)
		answer = &nats.Msg{Header: nats.Header{"Status": []string{"503"}}}
	case err != nil:
		s.respond(m.Reply, req.json, failure(op, fmt.Errorf("%w: forward to agent %q, which owns namespace %q: %w", protocol.ErrUnavailable, owner, ns, err)))
		return
	}
	if err := s.cfg.Conn.PublishMsg(&nats.Msg{Subject: m.Reply, Header: answer.Header, Data: answer.Data}); err != nil {
		s.cfg.Logger.Warn("send reply", "error", err)
	}
}

// malformedSubjects are the subjects under prefix that no request can be
// served on and no event uses: an operation with no namespace, and a
// namespace of more than one token (an unescaped dot).
func malformedSubjects(prefix string) []string {
	subjects := []string{prefix + ".*"}
	for _, op := range protocol.Operations {
		subjects = append(subjects, prefix+"."+op+".*.>")
	}
	return subjects
}

// answerMalformed answers requests on malformed subjects.
func (s *Service) answerMalformed(m *nats.Msg) {
	if m.Reply == "" {
		return // a publish that wants no answer
	}
	err := fmt.Errorf("%w: malformed request subject %q; requests go to %s.<operation>.<namespace>, with the namespace escaped (no dots), operations: %s",
		protocol.ErrInvalidArgument, m.Subject, s.cfg.Prefix, strings.Join(protocol.Operations, ", "))
	s.respond(m.Reply, protocol.IsJSON(m.Header),
		&messages.ErrorReply{Status: protocol.Status(err)})
}

// respond sends out to reply. A reply that cannot be encoded, or is too
// large to publish, is replaced by a CODE_INTERNAL one, so the caller is
// never left waiting.
func (s *Service) respond(reply string, json bool, out proto.Message) {
	data, err := protocol.Encode(out, json)
	if err != nil {
		s.cfg.Logger.Error("encode reply", "error", err)
		st := protocol.Status(fmt.Errorf("%w: the agent could not encode its reply", protocol.ErrInternal))
		if data, err = protocol.Encode(&messages.ErrorReply{Status: st}, json); err != nil {
			s.cfg.Logger.Error("encode internal-error reply", "error", err)
			return
		}
	}
	msg := &nats.Msg{Subject: reply, Data: data}
	if json {
		msg.Header = nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
	}
	err = s.cfg.Conn.PublishMsg(msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		// Tell the caller rather than leave it waiting out its timeout.
		s.cfg.Logger.Error("send reply", "error", err, "bytes", len(data))
		st := protocol.Status(fmt.Errorf("%w: the agent's reply (%d bytes) exceeds the server's max payload (%d bytes)",
			protocol.ErrInternal, len(data), s.cfg.Conn.MaxPayload()))
		if msg.Data, err = protocol.Encode(&messages.ErrorReply{Status: st}, json); err == nil {
			err = s.cfg.Conn.PublishMsg(msg)
		}
	}
	if err != nil {
		s.cfg.Logger.Warn("send reply", "error", err)
	}
}

// namespaceOf returns the namespace named by the last token of a request
// subject.
func namespaceOf(subject, prefix string) (string, error) {
	token := subject[strings.LastIndexByte(subject, '.')+1:]
	ns, err := natskv.UnescapeName(token)
	if err != nil {
		return "", fmt.Errorf("%w: namespace in subject: %w", protocol.ErrInvalidArgument, err)
	}
	if err := natskv.CheckName("namespace", ns); err != nil {
		return "", fmt.Errorf("%w: %w", protocol.ErrInvalidArgument, err)
	}
	if ns == OwnersNamespace {
		return "", fmt.Errorf("%w: namespace %q is reserved for the agents' ownership leases", protocol.ErrInvalidArgument, ns)
	}
	return ns, nil
}

// failure returns the reply of op that reports err.
func failure(op string, err error) proto.Message {
	st := protocol.Status(err)
	switch op {
	case protocol.OpClaim:
		return &messages.ClaimReply{Status: st}
	case protocol.OpCheck:
		return &messages.CheckReply{Status: st}
	case protocol.OpList:
		return &messages.ListReply{Status: st}
	case protocol.OpRelease:
		return &messages.ReleaseReply{Status: st}
	default:
		return &messages.StateReply{Status: st}
	}
}

func decode(req *request, m proto.Message) error {
	if err := protocol.Decode(req.data, req.json, m); err != nil {
		return fmt.Errorf("%w: %w", protocol.ErrInvalidArgument, err)
	}
	return nil
}

// timedOut turns the Manager's answer to a call past its deadline into
// the error the caller is told: unavailable, retry.
func (s *Service) timedOut(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: no answer within the agent's request timeout (%v); the change may still take effect; retry",
			protocol.ErrUnavailable, s.cfg.RequestTimeout)
	}
	return err
}

// refusal returns the error op would fail with for req before anything is
// sent to the Manager: a body that does not decode, or arguments the
// Manager refuses (bad names or durations, its policy). It changes
// nothing.
func (s *Service) refusal(op string, n *actors.Namespace, req *request) error {
	switch op {
	case protocol.OpClaim:
		in, err := claimRequest(req)
		if err != nil {
			return err
		}
		return n.RefusedClaim(in.GetLease(), in.GetHolder(), in.GetDuration().AsDuration())
	case protocol.OpCheck:
		var in messages.CheckRequest
		if err := decode(req, &in); err != nil {
			return err
		}
		return n.RefusedHolder(in.GetLease(), in.GetHolder())
	case protocol.OpRelease:
		var in messages.ReleaseRequest
		if err := decode(req, &in); err != nil {
			return err
		}
		return n.RefusedHolder(in.GetLease(), in.GetHolder())
	case protocol.OpState:
		var in messages.StateRequest
		if err := decode(req, &in); err != nil {
			return err
		}
		return n.RefusedLease(in.GetLease())
	case protocol.OpList:
		var in messages.ListRequest
		return decode(req, &in)
	}
	return nil
}

// claimRequest decodes a claim and checks its duration is one a
// time.Duration holds.
func claimRequest(req *request) (*messages.ClaimRequest, error) {
	var in messages.ClaimRequest
	if err := decode(req, &in); err != nil {
		return nil, err
	}
	if in.GetDuration() == nil {
		return nil, fmt.Errorf("%w: duration is missing", protocol.ErrInvalidArgument)
	}
	if err := in.GetDuration().CheckValid(); err != nil {
		return nil, fmt.Errorf("%w: duration: %w", protocol.ErrInvalidArgument, err)
	}
	if err := beyondGoDuration(in.GetDuration()); err != nil {
		return nil, err
	}
	return &in, nil
}

func (s *Service) claim(n *actors.Namespace, req *request, deadline time.Time, reply func(proto.Message)) {
	in, err := claimRequest(req)
	if err != nil {
		reply(failure(protocol.OpClaim, err))
		return
	}
	n.ClaimTenureFunc(deadline, in.GetLease(), in.GetHolder(), in.GetDuration().AsDuration(), func(fence uint64, err error) {
		reply(&messages.ClaimReply{Status: protocol.Status(s.timedOut(err)), Revision: fence})
	})
}

// beyondGoDuration returns an error naming a valid protobuf duration that
// a time.Duration cannot hold (about 292 years either way), or nil.
// AsDuration would saturate it, and the refusal would then name a
// duration the caller never asked for.
func beyondGoDuration(d *durationpb.Duration) error {
	const maxSeconds = math.MaxInt64 / int64(time.Second)
	s, ns := d.GetSeconds(), d.GetNanos()
	if -maxSeconds <= s && s <= maxSeconds {
		return nil
	}
	text := fmt.Sprintf("%ds", s)
	if ns != 0 {
		text = fmt.Sprintf("%d.%09ds", s, max(ns, -ns))
	}
	if s < 0 {
		return fmt.Errorf("%w: duration %s is not positive", protocol.ErrInvalidArgument, text)
	}
	return fmt.Errorf("%w: duration %s is longer than any lease may be", protocol.ErrInvalidArgument, text)
}

func (s *Service) check(n *actors.Namespace, req *request, deadline time.Time, reply func(proto.Message)) {
	var in messages.CheckRequest
	if err := decode(req, &in); err != nil {
		reply(failure(protocol.OpCheck, err))
		return
	}
	n.Token(in.GetLease(), in.GetHolder()).(*actors.Token).CheckFunc(deadline, func(info lease.Info, err error) {
		var f natskv.Fence
		if err == nil {
			err = info.Trapdoor(&f)
		}
		if err != nil {
			reply(failure(protocol.OpCheck, s.timedOut(err)))
			return
		}
		reply(&messages.CheckReply{Status: protocol.Status(nil), Revision: f.Revision, Bucket: f.Bucket, Key: f.Key})
	})
}

func (s *Service) list(ctx context.Context, n *actors.Namespace, req *request) proto.Message {
	var in messages.ListRequest
	if err := decode(req, &in); err != nil {
		return failure(protocol.OpList, err)
	}
	// A page holds what fits in one message, with room for the status,
	// headers and the next field: never more than maxListEntries, nor
	// more than the limit. The leases are asked of the actor a chunk at a
	// time, so that it copies little more than the page holds.
	room := int(s.cfg.Conn.MaxPayload()) - listReplyOverhead
	limit := maxListEntries(room)
	if l := int(in.GetLimit()); l > 0 && l < limit {
		limit = l
	}
	out := &messages.ListReply{Status: protocol.Status(nil)}
	after := in.GetAfter()
	for {
		leases, more, err := n.LeasesPage(ctx, after, min(listChunk, limit-len(out.Leases)))
		if err != nil {
			return failure(protocol.OpList, s.timedOut(err))
		}
		now := s.cfg.Manager.Clock().Now()
		for _, h := range leases {
			l := &messages.LeaseInfo{
				Lease: h.Lease, Holder: h.Holder, Revision: h.Fence,
				ExpiresIn: durationpb.New(h.Expiry.Sub(now)),
			}
			room -= listEntrySize(l, req.json)
			if room < 0 {
				if len(out.Leases) == 0 {
					return failure(protocol.OpList, fmt.Errorf("%w: the server's max payload (%d bytes) cannot hold one lease", protocol.ErrInternal, s.cfg.Conn.MaxPayload()))
				}
				out.Next = out.Leases[len(out.Leases)-1].Lease
				return out
			}
			out.Leases = append(out.Leases, l)
		}
		switch {
		case !more || len(leases) == 0:
			return out
		case len(out.Leases) == limit:
			out.Next = out.Leases[len(out.Leases)-1].Lease
			return out
		}
		after = leases[len(leases)-1].Lease
	}
}

// listChunk is how many leases a list asks of the namespace's actor at a
// time while it fills a page. A page of the max payload (1 MB) holds about
// 20k leases of short names, but up to 75k if every name were one byte:
// asked for at once, the actor would copy all those, on the goroutine
// that serves the namespace's claims, to have most of them dropped.
const listChunk = 4096

// listEntrySize returns how many bytes l adds to a list reply. In JSON it
// is measured, not estimated: escaping can make a name six times longer
// (a control character is \u0001), and a page estimated too small would
// exceed the max payload and never be sent.
func listEntrySize(l *messages.LeaseInfo, json bool) int {
	if !json {
		return proto.Size(l) + 4 // the field's tag and length
	}
	data, err := protojson.Marshal(l)
	if err != nil {
		return math.MaxInt // respond will report what cannot be encoded
	}
	return len(data) + 2 // the comma, and a space protojson may add
}

// listReplyOverhead is what a list reply needs beside its leases: the
// status, the next lease name, and the headers of a JSON reply.
const listReplyOverhead = 4096

// minListEntrySize is the least any lease adds to a list reply, in either
// encoding: one-byte names, revision 1, no time left, in protobuf (JSON
// spells out field names, so its entries are larger). A test holds it to
// listEntrySize.
const minListEntrySize = 14

// maxListEntries returns how many leases a page with room bytes for them
// can hold at most: one more than fit when every lease is the smallest
// possible, so a page never runs out of leases before it runs out of room.
func maxListEntries(room int) int { return max(room, 0)/minListEntrySize + 1 }

func (s *Service) release(n *actors.Namespace, req *request, deadline time.Time, reply func(proto.Message)) {
	var in messages.ReleaseRequest
	if err := decode(req, &in); err != nil {
		reply(failure(protocol.OpRelease, err))
		return
	}
	n.ReleaseFunc(deadline, in.GetLease(), in.GetHolder(), func(err error) {
		reply(&messages.ReleaseReply{Status: protocol.Status(s.timedOut(err))})
	})
}

func (s *Service) state(ctx context.Context, n *actors.Namespace, req *request) proto.Message {
	var in messages.StateRequest
	if err := decode(req, &in); err != nil {
		return failure(protocol.OpState, err)
	}
	info, held, err := n.Lease(ctx, in.GetLease())
	if err != nil {
		return failure(protocol.OpState, s.timedOut(err))
	}
	out := &messages.StateReply{Status: protocol.Status(nil), Held: held}
	if held {
		var f natskv.Fence
		_ = info.Trapdoor(&f)
		out.Holder, out.Revision = info.Holder, f.Revision
		out.ExpiresIn = durationpb.New(info.Expiry.Sub(s.cfg.Manager.Clock().Now()))
	}
	return out
}
