package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/embedded"
)

// Clustered embedded mode: each leaseagent runs its own embedded NATS
// server, joined with the others' in a NATS cluster with JetStream
// clustering, so that the bucket can have three (or five) replicas.

// clusterStartTimeout is how long serve waits at startup for the JetStream
// cluster to form, unless --start-timeout says otherwise: long enough for
// an operator or a service manager to start the other nodes.
const clusterStartTimeout = 2 * time.Minute

// Retrying the lease manager's start while the cluster forms.
const (
	clusterAttemptTimeout = 5 * time.Second        // one attempt to create or bind the bucket
	clusterRetryMin       = 100 * time.Millisecond // first pause between attempts
	clusterRetryMax       = 2 * time.Second        // longest pause between attempts
	clusterWaitLogEvery   = 5 * time.Second        // how often the wait is logged
	clusterPoll           = 100 * time.Millisecond // how often the server is asked whether it has a meta leader
)

// clusterFlags are the flags of the embedded server's cluster.
type clusterFlags struct {
	serverName      string
	clusterName     string
	clusterListen   string
	routes          []string
	clusterUser     string
	clusterPassword string
	startTimeout    time.Duration
}

// embeddedClusterFlags turn clustering on; they and --server-name
// configure the embedded server, so they cannot be used with --nats-url.
var embeddedClusterFlags = []string{"cluster-name", "cluster-listen", "routes", "cluster-user", "cluster-password"}

// addClusterFlags defines the cluster flags of serve.
func (a *app) addClusterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.serverName, "server-name", "", "`name` of the embedded NATS server, unique in its cluster and kept across restarts (default: the host name when clustering, else leaseagent)")
	fs.StringVar(&a.clusterName, "cluster-name", "", "join the embedded NATS server to the NATS cluster of this `name` (with --cluster-listen and --routes)")
	fs.StringVar(&a.clusterListen, "cluster-listen", "", "`host:port` of the embedded server's route listener, which the other nodes connect to (usually :6222 on a private network)")
	fs.StringSliceVar(&a.routes, "routes", nil, "route `urls` of the cluster's nodes, nats-route://host:port, comma-separated or repeated; best the same full list on every node")
	fs.StringVar(&a.clusterUser, "cluster-user", "", "user the cluster's nodes authenticate their routes with (with --cluster-password; the same on every node)")
	fs.StringVar(&a.clusterPassword, "cluster-password", "", "password of --cluster-user")
	fs.DurationVar(&a.startTimeout, "start-timeout", 0, "how long serve waits at startup for its store, in a cluster for the JetStream cluster to form (default: --timeout, or 2m when clustering)")
}

// clusterConfig fills in cfg's server name, cluster and start timeout from
// the flags. In external mode the cluster flags and --server-name are
// usage errors.
func (a *app) clusterConfig(cmd *cobra.Command, cfg *serveConfig) error {
	fs := cmd.Flags()
	if a.startTimeout < 0 {
		return usagef(cmd, "--start-timeout must not be negative, not %v", a.startTimeout)
	}
	cfg.StartTimeout = a.timeout
	if a.startTimeout > 0 {
		cfg.StartTimeout = a.startTimeout
	}
	var given []string
	for _, name := range embeddedClusterFlags {
		if fs.Changed(name) {
			given = append(given, "--"+name)
		}
	}
	if fs.Changed("nats-url") {
		if fs.Changed("server-name") {
			given = append(given, "--server-name")
		}
		if len(given) > 0 {
			return usagef(cmd, "%s configure the embedded server; they cannot be used with --nats-url (an external server's cluster is configured in that server)",
				strings.Join(given, ", "))
		}
		return nil
	}
	cfg.ServerName = a.serverName
	if len(given) == 0 {
		if a.replicas > 1 {
			return usagef(cmd, "--replicas %d needs a NATS cluster: give --cluster-name, --cluster-listen and --routes, or --nats-url", a.replicas)
		}
		return validateEmbedded(cmd, *cfg)
	}

	var missing []string
	for _, name := range []string{"cluster-name", "cluster-listen", "routes"} {
		if !fs.Changed(name) {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return usagef(cmd, "a cluster needs --cluster-name, --cluster-listen and --routes; %s missing", strings.Join(missing, " and "))
	}
	host, port, err := splitListen(a.clusterListen)
	if err != nil {
		return usagef(cmd, "--cluster-listen: %v", err)
	}
	routes := make([]string, 0, len(a.routes))
	for _, r := range a.routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !strings.Contains(r, "://") {
			r = "nats-route://" + r // host:port alone
		}
		routes = append(routes, r)
	}
	if cfg.ServerName == "" {
		name, err := os.Hostname()
		if err != nil || name == "" {
			return usagef(cmd, "--server-name is needed: the host name is unknown (%v)", err)
		}
		cfg.ServerName = name
	}
	cfg.Cluster = embedded.Cluster{
		Name:     a.clusterName,
		Host:     host,
		Port:     port,
		Routes:   routes,
		User:     a.clusterUser,
		Password: a.clusterPassword,
	}
	if a.startTimeout == 0 {
		cfg.StartTimeout = max(a.timeout, clusterStartTimeout)
	}
	return validateEmbedded(cmd, *cfg)
}

// validateEmbedded checks the server name and cluster of cfg as the
// embedded server will.
func validateEmbedded(cmd *cobra.Command, cfg serveConfig) error {
	err := (embedded.Config{Name: cfg.ServerName, DataDir: "-", Cluster: cfg.Cluster}).Validate()
	if err != nil {
		return usagef(cmd, "%s", clusterFlagNamesIn(err.Error()))
	}
	return nil
}

// clusterFlagNamesIn rewrites the field names in an error of
// embedded.Config's Validate as the flags that set them.
func clusterFlagNamesIn(msg string) string {
	return strings.NewReplacer(
		"embedded: Config.Cluster.Name", "--cluster-name",
		"embedded: Config.Cluster.Port", "--cluster-listen",
		"embedded: Config.Cluster.Routes", "--routes",
		"embedded: Config.Cluster.User", "--cluster-user",
		"embedded: Config.Cluster.Password", "--cluster-password",
		"embedded: Config.Name", "--server-name",
		"Cluster.Password", "--cluster-password",
		"Cluster.User", "--cluster-user",
		"\n", "; ",
	).Replace(msg)
}

// warnIfClusterExposed logs a warning when the route listener is reachable
// from other hosts without route credentials.
func warnIfClusterExposed(logger *slog.Logger, cfg serveConfig) {
	cl := cfg.Cluster
	if !cl.Enabled() || cl.User != "" || isLoopback(cl.Host) {
		return
	}
	logger.Warn("the embedded NATS server's cluster port listens on a non-loopback address without route credentials: "+
		"anyone who can reach it can join the cluster and read or change every lease; "+
		"keep it on a private network and set --cluster-user and --cluster-password (see docs/operations.md)",
		"cluster-listen", cfg.Cluster.Host)
}

// startManager starts the lease manager within cfg.StartTimeout. In
// cluster mode it retries while the JetStream cluster forms (until a meta
// leader is elected and enough servers have joined for the bucket's
// replicas), logging the wait. In external mode it retries too, in short
// attempts: a JetStream cluster that has just formed can leave a request
// to create the bucket unanswered, and one attempt would wait out the
// whole start timeout. Standalone, one attempt. srv is the embedded
// server, if any.
func startManager(ctx context.Context, cfg serveConfig, srv *embedded.Server, mcfg actors.Config, logger *slog.Logger) (*actors.Manager, error) {
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if srv != nil && !cfg.Cluster.Enabled() {
		return actors.New(startCtx, mcfg)
	}
	if err := mcfg.Validate(); err != nil {
		return nil, err
	}
	begin := time.Now()
	var (
		lastLog  time.Time
		attempts int
		pause    = clusterRetryMin
	)
	for {
		// A JetStream request sent before the meta leader is known gets
		// no answer and would wait for its whole timeout: poll the
		// server's own view first.
		err := errNoMetaLeader
		if srv == nil || metaLeader(srv) != "" {
			attempts++
			// Short attempts at first: a request that crossed another
			// node's creation of the bucket can go unanswered.
			limit := min(time.Duration(attempts)*clusterAttemptTimeout/5, clusterAttemptTimeout)
			attemptCtx, cancelAttempt := context.WithTimeout(startCtx, limit)
			var mgr *actors.Manager
			mgr, err = actors.New(attemptCtx, mcfg)
			timedOut := attemptCtx.Err() != nil
			cancelAttempt()
			if err == nil {
				if attempts > 1 || time.Since(begin) > time.Second {
					logger.Info("the JetStream cluster is ready", "waited", time.Since(begin).Round(time.Millisecond))
				}
				return mgr, nil
			}
			if srv == nil && !timedOut && startCtx.Err() == nil {
				// External: only an unanswered request is worth another
				// attempt; a server without JetStream, say, stays so.
				return nil, err
			}
		}
		if startCtx.Err() != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			if srv == nil {
				return nil, fmt.Errorf("the bucket could not be opened within %v (--start-timeout): %w", cfg.StartTimeout, err)
			}
			return nil, fmt.Errorf("the JetStream cluster did not form within %v (--start-timeout); %s: %w",
				cfg.StartTimeout, describePeers(routedPeers(srv)), err)
		}
		if now := time.Now(); now.Sub(lastLog) >= clusterWaitLogEvery && now.Sub(begin) >= time.Second {
			lastLog = now
			if srv == nil {
				logger.Info("waiting for the NATS server's JetStream", "waited", now.Sub(begin).Round(time.Second), "err", err)
			} else {
				logger.Info("waiting for the JetStream cluster", "cluster", cfg.Cluster.Name, "server", srv.Name(),
					"peers", strings.Join(routedPeers(srv), ","), "waited", now.Sub(begin).Round(time.Second), "err", err)
			}
		}
		wait := clusterPoll
		if err != errNoMetaLeader {
			wait = pause
			pause = min(2*pause, clusterRetryMax)
		}
		select {
		case <-startCtx.Done():
		case <-time.After(wait):
		}
	}
}

// metaLeader returns the name of the JetStream meta leader that srv
// knows of, or "".
func metaLeader(srv *embedded.Server) string {
	info, err := srv.NATSServer().Jsz(&server.JSzOptions{})
	if err != nil || info.Meta == nil {
		return ""
	}
	return info.Meta.Leader
}

// routedPeers returns the names of the other servers srv has routes to,
// sorted. (nats-server's route count is of connections, several per
// server.)
func routedPeers(srv *embedded.Server) []string {
	rz, err := srv.NATSServer().Routez(&server.RoutezOptions{})
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

// describePeers says which other nodes the routes reach.
func describePeers(peers []string) string {
	switch len(peers) {
	case 0:
		return "its routes reach no other node (are they running, do --routes reach them, are --cluster-user and --cluster-password the same on every node, and each --server-name unique?)"
	case 1:
		return fmt.Sprintf("its routes reach 1 other node (%s)", peers[0])
	}
	return fmt.Sprintf("its routes reach %d other nodes (%s)", len(peers), strings.Join(peers, ", "))
}

// errNoMetaLeader is why startManager waits before its first attempt.
var errNoMetaLeader = errors.New("no JetStream meta leader yet (one is elected once every node in --routes has joined the first time, a majority afterwards)")

// clusterSuffix is what the ready line adds in cluster mode: "" for a
// standalone server.
func clusterSuffix(cfg serveConfig, srv *embedded.Server) string {
	if !cfg.Cluster.Enabled() {
		return ""
	}
	return fmt.Sprintf(", server %s in cluster %s, routes on %s", srv.Name(), cfg.Cluster.Name, srv.ClusterURL())
}
