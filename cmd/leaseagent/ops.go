package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

func newClaimCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "claim NS LEASE HOLDER DURATION",
		Short: "Claim a lease for a holder, or extend it",
		Long: "claim makes HOLDER the holder of LEASE in namespace NS for at least DURATION\n" +
			"(a Go duration such as 30s or 5m), or extends the lease if HOLDER holds it.\n" +
			"It exits 1 if another holder holds the lease.",
		Example: "  leaseagent claim myapp leader unit-0 30s",
		Args:    exactArgs("NS", "LEASE", "HOLDER", "DURATION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := time.ParseDuration(args[3])
			if err != nil {
				return usagef(cmd, "bad DURATION %q: want a Go duration such as 30s or 1m", args[3])
			}
			if d <= 0 {
				return usagef(cmd, "DURATION must be positive, not %v", d)
			}
			return a.withNamespace(cmd, args[0], true, func(ctx context.Context, ns *client.Namespace) error {
				return claim(ctx, ns, args[1], args[2], d)
			})
		},
	}
}

func newReleaseCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "release NS LEASE HOLDER",
		Short: "Give up a lease a holder holds, now",
		Long:  "release ends HOLDER's hold on LEASE in namespace NS now. It exits 1 if HOLDER does not hold it.",
		Args:  exactArgs("NS", "LEASE", "HOLDER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withNamespace(cmd, args[0], true, func(ctx context.Context, ns *client.Namespace) error {
				return release(ctx, ns, args[1], args[2])
			})
		},
	}
}

func newCheckCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "check NS LEASE HOLDER",
		Short: "Print the fencing token if a holder holds a lease",
		Long: "check asks whether HOLDER holds LEASE in namespace NS. If so it prints the fencing\n" +
			"token of HOLDER's tenure (the KV revision of the record that made it the holder),\n" +
			"which only grows as the lease changes hands; if not it exits 1.",
		Args: exactArgs("NS", "LEASE", "HOLDER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withNamespace(cmd, args[0], true, func(ctx context.Context, ns *client.Namespace) error {
				return check(ctx, ns, args[1], args[2], a.stdout)
			})
		},
	}
}

func newLeasesCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "leases NS",
		Short: "List the held leases of a namespace",
		Long: "leases prints a table of the held leases of namespace NS: LEASE, HOLDER, EXPIRES-IN and REVISION.\n" +
			"A name that holds anything but printable characters, or begins with '\"', is printed\n" +
			"quoted as a Go string (\"x\\x1b[2J\").",
		Args: exactArgs("NS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withNamespace(cmd, args[0], true, func(ctx context.Context, ns *client.Namespace) error {
				return listLeases(ctx, ns, a.stdout)
			})
		},
	}
}

func newWaitCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "wait NS LEASE",
		Short: "Block until a lease is not held",
		Long: "wait returns as soon as LEASE in namespace NS is not held: at once if it is free,\n" +
			"otherwise when it expires or is released. It waits until interrupted unless\n" +
			"--timeout is given; then it exits 1 if the lease is still held when that runs\n" +
			"out (as hold does), 3 if no agent answered.",
		Args: exactArgs("NS", "LEASE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			bounded := cmd.Flags().Changed("timeout")
			err := a.withNamespace(cmd, args[0], bounded, func(ctx context.Context, ns *client.Namespace) error {
				err := wait(ctx, ns, args[1])
				if bounded && errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, protocol.ErrUnavailable) {
					return fmt.Errorf("wait for %s: %w after %v", leaseRef(args[0], args[1]), errStillHeld, a.timeout)
				}
				return err
			})
			if err != nil && cmd.Context().Err() != nil {
				return fmt.Errorf("wait for %s: %w", leaseRef(args[0], args[1]), interrupted(cmd.Context()))
			}
			return err
		},
	}
}

func newWatchCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "watch [NS]",
		Short: "Print lease events as they happen",
		Long: "watch prints one line for each lease that gets a new holder (claimed) or stops being\n" +
			"held (expired, also after a release), in namespace NS or, without NS, in every\n" +
			"namespace. Events are best effort: one published while watch is disconnected is\n" +
			"lost. It runs until interrupted, or for --timeout if that is given.\n" +
			"A name that holds anything but printable characters, or begins with '\"', is printed\n" +
			"quoted as a Go string (\"x\\x1b[2J\"); so is a namespace holding '/', so that the first\n" +
			"'/' outside quotes separates it from the lease.",
		Example: "  leaseagent watch myapp\n" +
			"  2026-01-02T03:04:05Z claimed myapp/leader holder=unit-0 revision=12 duration=30s",
		Args: rangeArgs(0, "[NS]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns := ""
			if len(args) == 1 {
				ns = args[0]
				if err := natskv.CheckName("namespace", ns); err != nil {
					return usagef(cmd, "%v", err)
				}
			}
			if a.timeout <= 0 {
				return usagef(cmd, "--timeout must be positive, not %v", a.timeout)
			}
			ctx := cmd.Context()
			if cmd.Flags().Changed("timeout") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, a.timeout)
				defer cancel()
			}
			// The server refuses a subscription asynchronously: without
			// this, watch of event subjects the credentials may not
			// subscribe to would print nothing until --timeout and exit 0.
			ctx, refuse := context.WithCancelCause(ctx)
			defer refuse(nil)
			closed := make(chan struct{})
			nc, err := a.connect(cmd, nats.MaxReconnects(-1), nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
				(&permissionWatch{cancel: refuse}).option())
			if err != nil {
				return err
			}
			defer nc.Close()
			err = refusal(ctx, watch(ctx, nc, a.prefix, ns, a.timeout, closed, a.stdout, a.logger()))
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
}

// natsOptions returns the connection options of the authentication and TLS
// flags.
func (a *app) natsOptions(cmd *cobra.Command) ([]nats.Option, error) {
	if strings.Trim(a.natsURL, " ,") == "" {
		// For serve it would otherwise mean the embedded server.
		return nil, usagef(cmd, "--nats-url must not be empty")
	}
	if err := checkNATSURL(a.natsURL); err != nil {
		return nil, usagef(cmd, "--nats-url: %v", err)
	}
	var opts []nats.Option
	if a.creds != "" {
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.user != "" || a.password != "" {
		opts = append(opts, nats.UserInfo(a.user, a.password))
	}
	if a.token != "" {
		opts = append(opts, nats.Token(a.token))
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		return nil, usagef(cmd, "--tls-cert and --tls-key must be given together")
	}
	if a.tlsCert != "" {
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	if a.creds != "" {
		if err := checkCreds(a.creds); err != nil {
			return nil, usagef(cmd, "--creds: %v", err)
		}
	}
	if err := checkTLSFiles(cmd, "--tls-cert", "--tls-key", "--tls-ca", a.tlsCert, a.tlsKey, a.tlsCA); err != nil {
		return nil, err
	}
	more, err := a.clientSecurityOptions(cmd)
	if err != nil {
		return nil, err
	}
	return append(opts, more...), nil
}

// connect connects to --nats-url with the authentication and TLS flags,
// then extra.
func (a *app) connect(cmd *cobra.Command, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := a.natsOptions(cmd)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("leaseagent "+cmd.Name()), nats.Timeout(a.timeout))
	nc, err := nats.Connect(a.natsURL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(a.natsURL), explainAuth(err))
	}
	return nc, nil
}

// withNamespace connects to the agent and calls fn with namespace ns.
// If bounded, connecting and fn together get --timeout; otherwise fn's
// context ends only with the command's (on SIGINT or SIGTERM).
func (a *app) withNamespace(cmd *cobra.Command, ns string, bounded bool, fn func(context.Context, *client.Namespace) error) error {
	if a.timeout <= 0 {
		return usagef(cmd, "--timeout must be positive, not %v", a.timeout)
	}
	ctx := cmd.Context()
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	// A subject the credentials may not use ends the command at once,
	// rather than when its request times out.
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	nc, err := a.connect(cmd, (&permissionWatch{cancel: refuse}).option())
	if err != nil {
		return err
	}
	defer nc.Close()
	a.logger().Debug("connected", "url", nc.ConnectedUrlRedacted())
	c, err := client.New(nc, client.WithPrefix(a.prefix))
	if err != nil {
		return usagef(cmd, "--prefix: %v", err)
	}
	return refusal(ctx, fn(ctx, c.Namespace(ns)))
}

// checkNATSURL returns an error for a comma-separated list of NATS URLs
// that nats.Connect could not parse, read as it reads them (a URL without
// a scheme gets nats://), or whose scheme it does not know (it would dial
// bogus://host as nats://host), or that mixes websocket URLs with others.
// It names the URL, with any user and password hidden.
func checkNATSURL(urls string) error {
	var plain, websocket string // one URL of each kind, redacted
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		full := u
		if !strings.Contains(full, "://") {
			full = "nats://" + full
		}
		parsed, err := url.Parse(full)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // its message repeats the URL, password and all
			}
			// Unparsed, it cannot be redacted: hide all before an '@'.
			if at := strings.LastIndex(u, "@"); at >= 0 {
				scheme, _, _ := strings.Cut(u, "://")
				if scheme == u {
					scheme = ""
				} else {
					scheme += "://"
				}
				u = scheme + "xxxxx" + u[at:]
			}
			return fmt.Errorf("bad URL %q: %v", u, err)
		}
		switch parsed.Scheme { // url.Parse made it lower case
		case "nats", "tls":
			plain = parsed.Redacted()
		case "ws", "wss":
			websocket = parsed.Redacted()
		default:
			return fmt.Errorf("bad URL %q: unknown scheme %q: want nats://, tls://, ws:// or wss://", parsed.Redacted(), parsed.Scheme)
		}
		if plain != "" && websocket != "" {
			return fmt.Errorf("%s and %s: websocket URLs (ws://, wss://) cannot be mixed with others", plain, websocket)
		}
	}
	return nil
}

// redactURL hides the passwords in a comma-separated list of NATS URLs.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// claim claims or extends a lease.
func claim(ctx context.Context, ns *client.Namespace, leaseName, holder string, d time.Duration) error {
	if err := ns.ClaimContext(ctx, leaseName, holder, d); err != nil {
		return fmt.Errorf("claim %s for %s: %w", leaseRef(ns.Name(), leaseName), printable(holder), err)
	}
	return nil
}

// release gives a lease up.
func release(ctx context.Context, ns *client.Namespace, leaseName, holder string) error {
	if err := ns.Release(ctx, leaseName, holder); err != nil {
		return fmt.Errorf("release %s for %s: %w", leaseRef(ns.Name(), leaseName), printable(holder), err)
	}
	return nil
}

// check writes the fencing token of holder's tenure of a lease to w, or
// returns an error wrapping lease.ErrNotHeld.
func check(ctx context.Context, ns *client.Namespace, leaseName, holder string, w io.Writer) error {
	var fence natskv.Fence
	tok, ok := ns.Token(leaseName, holder).(*client.Token)
	if !ok {
		return fmt.Errorf("check %s: unexpected token type %T", leaseRef(ns.Name(), leaseName), ns.Token(leaseName, holder))
	}
	if err := tok.CheckContext(ctx, &fence); err != nil {
		return fmt.Errorf("check %s for %s: %w", leaseRef(ns.Name(), leaseName), printable(holder), err)
	}
	_, err := fmt.Fprintln(w, fence.Revision)
	return err
}

// listLeases writes the held leases of a namespace to w as a table.
func listLeases(ctx context.Context, ns *client.Namespace, w io.Writer) error {
	leases, err := ns.Leases(ctx)
	if err != nil {
		return fmt.Errorf("list leases of %s: %w", printable(ns.Name()), err)
	}
	return writeLeases(w, leases)
}

// writeLeases writes leases to w as an aligned table sorted by lease, with
// expiries rounded to a tenth of a second, and names as printable prints
// them.
func writeLeases(w io.Writer, leases []client.LeaseInfo) error {
	leases = slices.Clone(leases)
	slices.SortFunc(leases, func(x, y client.LeaseInfo) int { return cmp.Compare(x.Lease, y.Lease) })
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE\tHOLDER\tEXPIRES-IN\tREVISION")
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", printable(l.Lease), printable(l.Holder), l.ExpiresIn.Round(100*time.Millisecond), l.Revision)
	}
	return tw.Flush()
}

// wait returns once a lease is not held.
func wait(ctx context.Context, ns *client.Namespace, leaseName string) error {
	if err := ns.WaitUntilExpiredContext(ctx, leaseName); err != nil {
		return fmt.Errorf("wait for %s: %w", leaseRef(ns.Name(), leaseName), err)
	}
	return nil
}

// watchSubjects returns the event subjects watch subscribes to: those of
// namespace ns, or of every namespace if ns is empty.
func watchSubjects(prefix, ns string) []string {
	if ns == "" {
		return []string{
			prefix + "." + protocol.EventClaimed + ".>",
			prefix + "." + protocol.EventExpired + ".>",
		}
	}
	ns = natskv.EscapeName(ns)
	return []string{
		prefix + "." + protocol.EventClaimed + "." + ns + ".*",
		prefix + "." + protocol.EventExpired + "." + ns + ".*",
	}
}

// watch subscribes to the events of namespace ns (all if empty) and writes
// one line per event to w until ctx ends, when it returns ctx's error, or
// closed is closed. timeout bounds subscribing.
func watch(ctx context.Context, nc *nats.Conn, prefix, ns string, timeout time.Duration, closed <-chan struct{}, w io.Writer, logger *slog.Logger) error {
	subjects := watchSubjects(prefix, ns)
	msgs := make(chan *nats.Msg, 4096)
	for _, s := range subjects {
		sub, err := nc.ChanSubscribe(s, msgs)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", s, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	err := nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: subscribe to %s: %w", protocol.ErrUnavailable, strings.Join(subjects, " and "), err)
	}
	logger.Debug("watching", "subjects", strings.Join(subjects, ","))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return fmt.Errorf("%w: connection to NATS closed", protocol.ErrUnavailable)
		case m := <-msgs:
			line, err := formatEvent(time.Now(), prefix, m.Subject, m.Data)
			if err != nil {
				logger.Warn("bad event", "subject", m.Subject, "err", err)
				continue
			}
			if _, err := fmt.Fprintln(w, line); err != nil {
				return err
			}
		}
	}
}

// formatEvent returns the line watch prints for an event received at t on
// subject <prefix>.<kind>.<namespace>.<lease>.
func formatEvent(t time.Time, prefix, subject string, data []byte) (string, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	tokens := strings.Split(rest, ".")
	if !ok || len(tokens) != 3 {
		return "", fmt.Errorf("not an event subject")
	}
	kind := tokens[0]
	ts := t.UTC().Format(time.RFC3339)
	switch kind {
	case protocol.EventClaimed:
		var ev messages.ClaimedEvent
		if err := proto.Unmarshal(data, &ev); err != nil {
			return "", fmt.Errorf("decode claimed event: %w", err)
		}
		ns, leaseName := eventNames(ev.GetNamespace(), ev.GetLease(), tokens)
		return fmt.Sprintf("%s claimed %s holder=%s revision=%d duration=%s",
			ts, leaseRef(ns, leaseName), printable(ev.GetHolder()), ev.GetRevision(), ev.GetDuration().AsDuration()), nil
	case protocol.EventExpired:
		var ev messages.ExpiredEvent
		if err := proto.Unmarshal(data, &ev); err != nil {
			return "", fmt.Errorf("decode expired event: %w", err)
		}
		ns, leaseName := eventNames(ev.GetNamespace(), ev.GetLease(), tokens)
		return fmt.Sprintf("%s expired %s holder=%s revision=%d",
			ts, leaseRef(ns, leaseName), printable(ev.GetHolder()), ev.GetRevision()), nil
	default:
		return "", fmt.Errorf("unknown event kind %q", kind)
	}
}

// eventNames returns the namespace and lease an event names, falling back to
// the (escaped) names in its subject tokens (kind, namespace, lease).
func eventNames(ns, leaseName string, tokens []string) (string, string) {
	if ns == "" {
		if n, err := natskv.UnescapeName(tokens[1]); err == nil {
			ns = n
		} else {
			ns = tokens[1]
		}
	}
	if leaseName == "" {
		if n, err := natskv.UnescapeName(tokens[2]); err == nil {
			leaseName = n
		} else {
			leaseName = tokens[2]
		}
	}
	return ns, leaseName
}
