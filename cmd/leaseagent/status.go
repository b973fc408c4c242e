package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// defaultDiscoveryWait is how long status collects the agents' answers.
const defaultDiscoveryWait = 500 * time.Millisecond

// statusFlags are the flags of status that no other command has.
type statusFlags struct {
	statusJSON    bool
	discoveryWait time.Duration
}

func newStatusCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the NATS nodes, the agents, who owns which namespace and how many leases each holds",
		Long: "status shows the cluster as an operator needs it: the NATS server it is connected to,\n" +
			"the bucket's stream with its replicas and which node leads it, the agents that answer\n" +
			"(NATS micro discovery of the \"leaseagent\" service with --prefix) and the namespaces\n" +
			"each owns, and every namespace with its owner and its number of held leases.\n" +
			"It reads the bucket directly (it never creates or changes it) and waits --discovery-wait\n" +
			"for the agents' answers. --json prints the same as one JSON object.\n" +
			"It exits 3 when no agent answers (after printing what it read): none is running,\n" +
			"or they use another --prefix.",
		Example: "  leaseagent status\n  leaseagent status --json --nats-url nats://10.0.0.1:4222",
		Args:    exactArgs(),
		RunE:    a.runStatus,
	}
	fs := cmd.Flags()
	fs.StringVar(&a.bucket, "bucket", defaultBucket, "KV bucket holding the leases")
	fs.BoolVar(&a.statusJSON, "json", false, "print the status as JSON")
	fs.DurationVar(&a.discoveryWait, "discovery-wait", defaultDiscoveryWait, "how long to collect the agents' answers to discovery (at most --timeout)")
	return cmd
}

// statusReport is what status prints; its JSON form is --json's.
type statusReport struct {
	NATS       statusServer      `json:"nats"`
	Bucket     statusBucket      `json:"bucket"`
	Agents     []statusAgent     `json:"agents"`
	Namespaces []statusNamespace `json:"namespaces"`

	// Where and how long status asked the agents, for the text form.
	prefix        string
	discoveryWait time.Duration
}

// statusServer is the NATS server status is connected to.
type statusServer struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	URL     string `json:"url"`
	Cluster string `json:"cluster"` // empty: not clustered
	Version string `json:"version"`
}

// statusBucket is the bucket and its stream.
type statusBucket struct {
	Name     string       `json:"name"`
	Stream   string       `json:"stream"`
	Replicas int          `json:"replicas"` // configured
	Leader   string       `json:"leader"`   // empty: none now
	Peers    []statusPeer `json:"peers"`    // the leader and the followers, by name
}

// statusPeer is a NATS node that keeps a copy of the bucket.
type statusPeer struct {
	Name    string `json:"name"`
	Leader  bool   `json:"leader"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	// ActiveMS is how long ago the leader last heard from this follower,
	// in milliseconds; 0 for the leader, and for a follower it has not
	// heard from since it was elected.
	ActiveMS float64 `json:"active_ms"`
	// Lag is how many operations this follower is behind the leader.
	Lag uint64 `json:"lag"`
}

// statusAgent is an agent that answered discovery.
type statusAgent struct {
	ID       string   `json:"id"` // empty: the agent does not share its bucket
	Version  string   `json:"version"`
	Instance string   `json:"instance"` // the micro service's instance ID
	Owns     []string `json:"owns"`     // namespaces, sorted
}

// statusNamespace is a namespace with an owner or with held leases.
type statusNamespace struct {
	Name      string `json:"name"`
	Owner     string `json:"owner"`      // agent ID; empty: none
	OwnerLive bool   `json:"owner_live"` // the owner answered discovery
	Leases    int    `json:"leases"`
}

func (a *app) runStatus(cmd *cobra.Command, _ []string) error {
	switch {
	case a.timeout <= 0:
		return usagef(cmd, "--timeout must be positive, not %v", a.timeout)
	case a.discoveryWait <= 0:
		return usagef(cmd, "--discovery-wait must be positive, not %v", a.discoveryWait)
	}
	if err := checkBucket(cmd, a.bucket); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	nc, err := a.connect(cmd, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			refuse(fmt.Errorf("refused by the NATS server: %w (status reads the bucket through $JS.API and asks %s)",
				err, discoverySubject()))
		}
	}))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := natskv.BucketConfig{JetStream: js, Name: a.bucket}
	report, err := gatherStatus(ctx, nc, cfg, a.prefix, min(a.discoveryWait, a.timeout))
	if err != nil {
		return refusal(ctx, err)
	}
	if a.statusJSON {
		err = writeStatusJSON(a.stdout, report)
	} else {
		err = writeStatus(a.stdout, report)
	}
	if err != nil {
		return err
	}
	return noAgentAnswered(report, a.bucket)
}

// noAgentAnswered is status's error when no agent answered discovery:
// nothing serves the leases it found, or it asked on the wrong --prefix
// (exit 3, unavailable). A health check must not pass on that.
func noAgentAnswered(r *statusReport, bucket string) error {
	if len(r.Agents) > 0 {
		return nil
	}
	return fmt.Errorf("%w: no agent answered on prefix %q within --discovery-wait %v: none is running, "+
		"or they use another --prefix; check --prefix and --bucket (%q)",
		protocol.ErrUnavailable, r.prefix, r.discoveryWait, bucket)
}

// discoverySubject is where the agents' micro services answer INFO.
func discoverySubject() string {
	s, _ := micro.ControlSubject(micro.InfoVerb, agent.ServiceName, "")
	return s
}

// gatherStatus reads the status of the bucket of cfg and of the agents with
// prefix through nc; it collects the agents' answers for wait.
func gatherStatus(ctx context.Context, nc *nats.Conn, cfg natskv.BucketConfig, prefix string, wait time.Duration) (*statusReport, error) {
	// Ask the agents first; their answers arrive while the bucket is read.
	deadline := time.Now().Add(wait)
	d, err := discover(ctx, nc)
	if err != nil {
		return nil, err
	}
	defer d.stop()

	r := &statusReport{prefix: prefix, discoveryWait: wait, NATS: statusServer{
		Name:    nc.ConnectedServerName(),
		ID:      nc.ConnectedServerId(),
		URL:     nc.ConnectedUrlRedacted(),
		Cluster: nc.ConnectedClusterName(),
		Version: nc.ConnectedServerVersion(),
	}}
	b, err := natskv.BindBucket(ctx, cfg)
	if err != nil {
		return nil, bucketError(ctx, cfg.Name, r.NATS.Name, err)
	}
	info, err := b.StreamInfo(ctx)
	if err != nil {
		return nil, bucketError(ctx, cfg.Name, r.NATS.Name, err)
	}
	r.Bucket = bucketStatus(b.Name(), info)

	owners, err := readOwners(ctx, b)
	if err != nil {
		return nil, bucketError(ctx, cfg.Name, r.NATS.Name, err)
	}
	counts, err := b.CountHeld(ctx)
	if err != nil {
		return nil, bucketError(ctx, cfg.Name, r.NATS.Name, err)
	}
	delete(counts, agent.OwnersNamespace)

	t := time.NewTimer(time.Until(deadline))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	r.Agents = agentsStatus(d.stop(), prefix, owners)
	r.Namespaces = namespacesStatus(owners, counts, r.Agents)
	return r, nil
}

// bucketError explains an error reading bucket through server.
func bucketError(ctx context.Context, bucket, server string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: bucket %q not found on NATS server %s: no agent has created it (is --bucket right?)",
			protocol.ErrUnavailable, bucket, server)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: NATS server %s: %w", protocol.ErrUnavailable, server, err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w: bucket %q: JetStream did not answer within --timeout: %w", protocol.ErrUnavailable, bucket, err)
	}
	return fmt.Errorf("bucket %q: %w", bucket, err)
}

// bucketStatus returns the bucket's part of the status from its stream's
// info.
func bucketStatus(name string, info *jetstream.StreamInfo) statusBucket {
	s := statusBucket{Name: name, Stream: info.Config.Name, Replicas: info.Config.Replicas, Peers: []statusPeer{}}
	if c := info.Cluster; c != nil {
		s.Leader = c.Leader
		if c.Leader != "" {
			s.Peers = append(s.Peers, statusPeer{Name: c.Leader, Leader: true, Current: true})
		}
		for _, p := range c.Replicas {
			if p == nil {
				continue
			}
			s.Peers = append(s.Peers, statusPeer{
				Name:     p.Name,
				Current:  p.Current,
				Offline:  p.Offline,
				ActiveMS: float64(p.Active) / float64(time.Millisecond),
				Lag:      p.Lag,
			})
		}
	}
	slices.SortFunc(s.Peers, func(x, y statusPeer) int { return cmp.Compare(x.Name, y.Name) })
	return s
}

// readOwners returns the owner's agent ID of every owned namespace: the
// held leases of the ownership namespace.
func readOwners(ctx context.Context, b *natskv.Bucket) (map[string]string, error) {
	c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: agent.OwnersNamespace})
	if err != nil {
		return nil, err
	}
	snap, err := c.Load(ctx)
	if err != nil {
		return nil, err
	}
	// A record that cannot be read is left out and named in the error;
	// the others are still good, and an agent would not take them for
	// owners either.
	_ = c.ApplySnapshot(snap)
	owners := make(map[string]string)
	for ns, info := range c.Leases() {
		owners[ns] = info.Holder
	}
	return owners, nil
}

// discovery collects the answers of the agents' micro services to INFO.
type discovery struct {
	sub *nats.Subscription

	mu      sync.Mutex
	infos   []micro.Info
	stopped bool
}

// discover asks every leaseagent micro service for its info; the answers
// are collected until stop.
func discover(ctx context.Context, nc *nats.Conn) (*discovery, error) {
	d := &discovery{}
	inbox := nc.NewRespInbox()
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil || info.Type != micro.InfoResponseType {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.stopped {
			d.infos = append(d.infos, info)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", inbox, err)
	}
	d.sub = sub
	if err := nc.PublishRequest(discoverySubject(), inbox, nil); err != nil {
		d.stop()
		return nil, fmt.Errorf("publish to %s: %w", discoverySubject(), err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		d.stop()
		return nil, fmt.Errorf("%w: ask %s: %w", protocol.ErrUnavailable, discoverySubject(), err)
	}
	return d, nil
}

// stop stops collecting and returns the answers collected.
func (d *discovery) stop() []micro.Info {
	_ = d.sub.Unsubscribe()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	return d.infos
}

// agentsStatus returns the agents of infos that serve prefix, sorted by ID
// and instance, with the namespaces each owns.
func agentsStatus(infos []micro.Info, prefix string, owners map[string]string) []statusAgent {
	owns := make(map[string][]string)
	for ns, owner := range owners {
		owns[owner] = append(owns[owner], ns)
	}
	agents := []statusAgent{}
	seen := make(map[string]bool)
	for _, info := range infos {
		if info.Name != agent.ServiceName || info.Metadata[agent.MetadataPrefix] != prefix || seen[info.ID] {
			continue
		}
		seen[info.ID] = true
		id := info.Metadata[agent.MetadataAgentID]
		a := statusAgent{ID: id, Version: info.Version, Instance: info.ID, Owns: []string{}}
		if id != "" {
			a.Owns = append(a.Owns, owns[id]...)
			slices.Sort(a.Owns)
		}
		agents = append(agents, a)
	}
	slices.SortFunc(agents, func(x, y statusAgent) int {
		return cmp.Or(cmp.Compare(x.ID, y.ID), cmp.Compare(x.Instance, y.Instance))
	})
	return agents
}

// namespacesStatus returns every namespace that has an owner or held
// leases, sorted by name.
func namespacesStatus(owners map[string]string, counts map[string]int, agents []statusAgent) []statusNamespace {
	live := make(map[string]bool)
	for _, a := range agents {
		if a.ID != "" {
			live[a.ID] = true
		}
	}
	names := make(map[string]bool)
	for ns := range owners {
		names[ns] = true
	}
	for ns := range counts {
		names[ns] = true
	}
	out := []statusNamespace{}
	for ns := range names {
		owner := owners[ns]
		out = append(out, statusNamespace{Name: ns, Owner: owner, OwnerLive: owner != "" && live[owner], Leases: counts[ns]})
	}
	slices.SortFunc(out, func(x, y statusNamespace) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

// writeStatusJSON writes r to w as indented JSON. Names are written as
// they are: '>', '<' and '&', which names may hold, are not escaped for
// HTML (\u003e), which would only puzzle a reader or a jq filter.
func writeStatusJSON(w io.Writer, r *statusReport) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeStatus writes r to w as aligned text.
func writeStatus(w io.Writer, r *statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	server := printable(r.NATS.Name)
	if r.NATS.Cluster != "" {
		server += " in cluster " + printable(r.NATS.Cluster)
	} else {
		server += " (single server, not clustered)"
	}
	fmt.Fprintf(tw, "NATS server:\t%s, %s, version %s\n", server, printable(r.NATS.URL), printable(r.NATS.Version))
	leader := "none (an election is in progress, or the bucket's nodes are down)"
	if r.Bucket.Leader != "" {
		leader = printable(r.Bucket.Leader)
	}
	fmt.Fprintf(tw, "Bucket:\t%s (stream %s), %s, leader %s\n", printable(r.Bucket.Name), printable(r.Bucket.Stream),
		plural(r.Bucket.Replicas, "replica"), leader)
	if len(r.Agents) == 0 {
		fmt.Fprintf(tw, "Agents:\tnone answered on prefix %s within %v: none is running, or --prefix is not theirs\n",
			strconv.Quote(r.prefix), r.discoveryWait)
	} else {
		fmt.Fprintf(tw, "Agents:\t%d answered\n", len(r.Agents))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tCURRENT\tACTIVE\tLAG")
	for _, p := range r.Bucket.Peers {
		role, current, active, lag := "follower", "no", fmtMS(p.ActiveMS), strconv.FormatUint(p.Lag, 10)
		switch {
		case p.Leader:
			role, current, active, lag = "leader", "yes", "-", "-"
		case p.Offline:
			current = "offline"
		case p.Current:
			current = "yes"
		}
		if !p.Leader && p.ActiveMS == 0 {
			// NATS reports 0 for a follower the leader has not heard
			// from since it was elected: one that died before.
			active = "never"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(p.Name), role, current, active, lag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tVERSION\tINSTANCE\tOWNS")
	for _, a := range r.Agents {
		owns := "-"
		if len(a.Owns) > 0 {
			// A namespace holding a ',' is quoted: the list stays
			// unambiguous.
			quoted := make([]string, len(a.Owns))
			for i, ns := range a.Owns {
				quoted[i] = printableSep(ns, ",")
			}
			owns = strings.Join(quoted, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", orDash(printable(a.ID)), printable(a.Version), printable(a.Instance), owns)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tOWNER\tLEASES")
	for _, ns := range r.Namespaces {
		owner := orDash(printable(ns.Owner))
		if ns.Owner != "" && !ns.OwnerLive {
			owner += " (gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", printable(ns.Name), owner, ns.Leases)
	}
	return tw.Flush()
}

// fmtMS formats a duration in milliseconds for the ACTIVE column.
func fmtMS(ms float64) string {
	return time.Duration(ms * float64(time.Millisecond)).Round(time.Millisecond).String()
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
