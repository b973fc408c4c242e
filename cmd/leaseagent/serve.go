package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/policy"
)

// stopTimeout bounds how long the lease manager may take to stop.
const stopTimeout = 10 * time.Second

func newServeCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the agent (what leaseagent does without a subcommand)",
		Long: "serve runs the lease agent until SIGINT or SIGTERM.\n\n" +
			"By default it starts an embedded NATS server with JetStream on --listen, keeping its\n" +
			"data in --data-dir and fsyncing every write before acknowledging it. With --nats-url\n" +
			"it uses that server instead (it must have JetStream; the bucket is created if missing).\n" +
			"With --cluster-name, --cluster-listen and --routes the embedded server joins a NATS\n" +
			"cluster of leaseagents, and the bucket can be created with --replicas 3; serve then\n" +
			"waits up to --start-timeout (default 2m) for the JetStream cluster to form.\n" +
			"When ready it prints one line to stdout saying where it listens; logs go to stderr.",
		Args: exactArgs(),
		RunE: a.runServe,
	}
	a.addServeFlags(cmd.Flags())
	return cmd
}

// addServeFlags defines the flags of serve. The root command has them too,
// since it serves when run without a subcommand.
func (a *app) addServeFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.listen, "listen", defaultListen, "`host:port` of the embedded NATS server (port 0 picks a free port)")
	fs.StringVar(&a.dataDir, "data-dir", defaultDataDir, "JetStream `directory` of the embedded NATS server")
	fs.StringVar(&a.bucket, "bucket", defaultBucket, "KV bucket holding the leases")
	fs.IntVar(&a.replicas, "replicas", defaultReplicas, "copies of the bucket, when it is created")
	fs.DurationVar(&a.maxDuration, "max-duration", defaultMaxDuration, "longest lease a claim may ask for")
	fs.IntVar(&a.maxNamespaces, "max-namespaces", actors.DefaultMaxNamespaces, "most namespaces served at once; requests for more are refused until some are idle")
	fs.DurationVar(&a.idleTimeout, "idle-timeout", actors.DefaultIdleTimeout, "how long a namespace with no leases and no waiters keeps its memory")
	fs.IntVar(&a.maxInflight, flagMaxInflight, agent.DefaultMaxRequestsInflight, "most requests in flight (received, not yet answered) at once; more are refused at once with \"unavailable\", which clients retry")
	fs.IntVar(&a.maxNSInflight, flagMaxNSInflight, agent.DefaultMaxNamespaceRequestsInflight, "most requests of one namespace in flight at once, a list counting as an eighth of it; at most --"+flagMaxInflight)
	fs.DurationVar(&a.markerTTL, "delete-marker-ttl", natskv.DefaultDeleteMarkerTTL, "how long a released or expired lease leaves its delete marker in the bucket (at least 1s; negative: for ever)")
	fs.StringVar(&a.metricsListen, "metrics-listen", "", "`host:port` to serve /metrics, /healthz and /readyz on (off if empty; 127.0.0.1:9464 is usual)")
	a.addServeSecurityFlags(fs)
	a.addClusterFlags(fs)
	a.addOwnershipFlags(fs)
}

// Names of the flags that bound the requests in flight.
const (
	flagMaxInflight   = "max-requests-inflight"
	flagMaxNSInflight = "max-namespace-requests-inflight"
)

// serveConfig is what serve runs, read from the flags.
type serveConfig struct {
	// Ownership says how this agent shares the bucket's namespaces with
	// the other agents on it.
	Ownership agent.Ownership

	// External NATS server: URL and connection options. Empty URL: embedded.
	NATSURL     string
	NATSOptions []nats.Option

	// Embedded server.
	Host    string
	Port    int // embedded.RandomPort for a free port
	DataDir string

	// ServerName is the embedded server's name; empty: the default.
	// Cluster, if enabled, joins it to a NATS cluster.
	ServerName string
	Cluster    embedded.Cluster

	Bucket        string
	Replicas      int
	Prefix        string
	MaxDuration   time.Duration
	MaxNamespaces int
	IdleTimeout   time.Duration
	MarkerTTL     time.Duration // actors.Config.DeleteMarkerTTL
	// The bounds on requests in flight: agent.Config.MaxRequestsInflight
	// and MaxNamespaceRequestsInflight.
	MaxInflight   int
	MaxNSInflight int
	StartTimeout  time.Duration // bounds the lease manager's start (in a cluster, the wait for it to form)

	// MetricsListen is where /metrics, /healthz and /readyz are served;
	// empty: nowhere.
	MetricsListen string

	// Who the embedded server admits and its TLS, and the options of the
	// agent's own connection to it (credentials it admits); see
	// security.go.
	Auth         embedded.Auth
	TLS          embedded.TLS
	AgentOptions []nats.Option

	// Policy is the namespaces' policy from the config file; nil: none.
	Policy *policy.Policy
}

func (a *app) runServe(cmd *cobra.Command, _ []string) error {
	cfg, err := a.serveConfig(cmd)
	if err != nil {
		return err
	}
	return serve(cmd.Context(), cfg, a.stdout, a.logger())
}

// serveConfig checks the flags of serve and returns what they ask for.
func (a *app) serveConfig(cmd *cobra.Command) (serveConfig, error) {
	fs := cmd.Flags()
	cfg := serveConfig{
		DataDir:       a.dataDir,
		Bucket:        a.bucket,
		Replicas:      a.replicas,
		Prefix:        a.prefix,
		MaxDuration:   a.maxDuration,
		MaxNamespaces: a.maxNamespaces,
		IdleTimeout:   a.idleTimeout,
		MarkerTTL:     a.markerTTL,
		MaxInflight:   a.maxInflight,
		MaxNSInflight: a.maxNSInflight,
		MetricsListen: a.metricsListen,
	}
	if err := checkBucket(cmd, a.bucket); err != nil {
		return cfg, err
	}
	if a.metricsListen != "" {
		if _, _, err := splitListen(a.metricsListen); err != nil {
			return cfg, usagef(cmd, "--metrics-listen: %v", err)
		}
	}
	switch {
	case a.replicas < 1:
		return cfg, usagef(cmd, "--replicas must be at least 1, not %d", a.replicas)
	case a.maxDuration <= 0:
		return cfg, usagef(cmd, "--max-duration must be positive, not %v", a.maxDuration)
	case a.maxNamespaces < 1:
		return cfg, usagef(cmd, "--max-namespaces must be at least 1, not %d", a.maxNamespaces)
	case a.idleTimeout <= 0:
		return cfg, usagef(cmd, "--idle-timeout must be positive, not %v", a.idleTimeout)
	case a.timeout <= 0:
		return cfg, usagef(cmd, "--timeout must be positive, not %v", a.timeout)
	case a.markerTTL >= 0 && a.markerTTL < time.Second:
		return cfg, usagef(cmd, "--delete-marker-ttl must be at least 1s (or negative, to keep markers for ever), not %v", a.markerTTL)
	case a.maxInflight < 1:
		return cfg, usagef(cmd, "--%s must be at least 1, not %d", flagMaxInflight, a.maxInflight)
	case a.maxNSInflight < 1:
		return cfg, usagef(cmd, "--%s must be at least 1, not %d", flagMaxNSInflight, a.maxNSInflight)
	case a.maxNSInflight > a.maxInflight:
		if fs.Changed(flagMaxNSInflight) {
			return cfg, usagef(cmd, "--%s (%d) must not exceed --%s (%d)", flagMaxNSInflight, a.maxNSInflight, flagMaxInflight, a.maxInflight)
		}
		cfg.MaxNSInflight = a.maxInflight // its default, capped
	}
	if err := a.securityConfig(cmd, &cfg); err != nil {
		return cfg, err
	}
	if err := a.clusterConfig(cmd, &cfg); err != nil {
		return cfg, err
	}
	if fs.Changed("nats-url") {
		if fs.Changed("listen") || fs.Changed("data-dir") {
			return cfg, usagef(cmd, "--listen and --data-dir configure the embedded server; they cannot be used with --nats-url")
		}
		opts, err := a.natsOptions(cmd)
		if err != nil {
			return cfg, err
		}
		cfg.NATSURL, cfg.NATSOptions = a.natsURL, opts
		return cfg, a.ownershipConfig(cmd, &cfg)
	}
	if a.dataDir == "" {
		return cfg, usagef(cmd, "--data-dir must not be empty")
	}
	host, port, err := splitListen(a.listen)
	if err != nil {
		return cfg, usagef(cmd, "--listen: %v", err)
	}
	cfg.Host, cfg.Port = host, port
	return cfg, a.ownershipConfig(cmd, &cfg)
}

// checkBucket rejects a --bucket that is not a bucket name, before
// anything starts.
func checkBucket(cmd *cobra.Command, bucket string) error {
	switch {
	case bucket == "":
		return usagef(cmd, "--bucket must not be empty")
	case !natskv.ValidBucketName(bucket):
		return usagef(cmd, "--bucket: %q may contain only letters, digits, '-' and '_'", bucket)
	}
	return nil
}

// splitListen parses host:port for the embedded server. An empty host means
// every interface; port 0 means a free port.
func splitListen(listen string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q in %q", p, listen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = embedded.RandomPort
	}
	return host, port, nil
}

// serve runs the agent until ctx ends, then stops it: the service first
// (it answers the requests in progress), then the lease manager, the NATS
// connection and the embedded server, if any. It prints one line to stdout
// once it serves. It returns nil if it ran and stopped cleanly.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, logger *slog.Logger) error {
	var (
		r     running
		where string
		err   error
	)
	// Until the agent serves, a subject the NATS server refuses it ends
	// startCtx, and with it the start, naming the subject.
	startCtx, failStart := context.WithCancelCause(ctx)
	defer failStart(nil)
	natsErrs := &agentNATSErrors{logger: logger, failStart: failStart}
	if cfg.NATSURL != "" {
		opts := append([]nats.Option{
			nats.Name("leaseagent"),
			nats.MaxReconnects(-1),
			nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
				if nc.IsClosed() {
					return // closed by serve itself, stopping
				}
				logger.Warn("disconnected from NATS", "err", err)
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				logger.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			}),
			natsErrs.option(),
		}, cfg.NATSOptions...)
		if r.nc, err = nats.Connect(cfg.NATSURL, opts...); err != nil {
			return fmt.Errorf("connect to %s: %w", redactURL(cfg.NATSURL), explainAuth(err))
		}
		where = fmt.Sprintf("%s (external, bucket %s)", r.nc.ConnectedUrlRedacted(), cfg.Bucket)
	} else {
		warnIfExposed(logger, cfg)
		warnIfClusterExposed(logger, cfg)
		r.srv, err = embedded.Start(embedded.Config{
			Name:    cfg.ServerName,
			Host:    cfg.Host,
			Port:    cfg.Port,
			DataDir: cfg.DataDir,
			Logger:  slog.New(noticesAsDebug{logger.Handler()}).With("component", "nats-server"),
			Auth:    cfg.Auth,
			TLS:     cfg.TLS,
			Cluster: cfg.Cluster,
		})
		if err != nil {
			return err
		}
		if r.nc, err = r.srv.Connect(append(cfg.AgentOptions, nats.Name("leaseagent"), natsErrs.option())...); err != nil {
			return errors.Join(fmt.Errorf("connect to the embedded server: %w", err), r.stop(logger))
		}
		where = fmt.Sprintf("%s (embedded, data in %s%s)", r.srv.ClientURL(), cfg.DataDir, clusterSuffix(cfg, r.srv))
	}

	var m *metrics.Metrics
	if cfg.MetricsListen != "" {
		m = metrics.New()
		if r.metrics, err = metrics.Serve(cfg.MetricsListen, m, r.ready, logger); err != nil {
			return errors.Join(err, r.stop(logger))
		}
		logger.Info("serving metrics", "addr", r.metrics.Addr().String())
	}

	// The embedded server fsyncs every write (SyncAlways), so claims gain
	// from sharing fsyncs in atomic batches (a clustered one shares its
	// Raft proposals); an external server's policy is unknown, and without
	// SyncAlways batches only cost.
	minBatch := 0
	// The embedded server can tell which events anyone would receive.
	var interest func(string) bool
	if cfg.NATSURL == "" {
		minBatch = actors.DefaultMinBatch
		interest = r.srv.Interest
	}
	// Refused for its bucket, the agent must not have created it first.
	if err := agent.CheckBucket(r.nc, cfg.Prefix, cfg.Bucket); err != nil {
		return errors.Join(natsErrs.started(startCtx, r.nc, err), r.stop(logger))
	}
	r.mgr, err = startManager(startCtx, cfg, r.srv, actors.Config{
		MinBatch:        minBatch,
		Interest:        interest,
		Metrics:         m,
		Conn:            r.nc,
		Bucket:          cfg.Bucket,
		Replicas:        cfg.Replicas,
		Prefix:          cfg.Prefix,
		MaxDuration:     cfg.MaxDuration,
		MaxNamespaces:   cfg.MaxNamespaces,
		IdleTimeout:     cfg.IdleTimeout,
		DeleteMarkerTTL: cfg.MarkerTTL,
		Logger:          logger.With("component", "actors"),
		Policy:          cfg.Policy,
	}, logger)
	if err != nil {
		err = natsErrs.started(startCtx, r.nc, err)
		stopErr := r.stop(logger)
		if ctx.Err() != nil && stopErr == nil {
			logger.Info("stopped before serving", "cause", context.Cause(ctx))
			return nil
		}
		return errors.Join(fmt.Errorf("start the lease manager: %w", err), stopErr)
	}
	warnIfFewerReplicas(ctx, r.mgr.Bucket(), cfg, logger)
	r.svc, err = agent.Start(agent.Config{
		Conn:      r.nc,
		Manager:   r.mgr,
		Prefix:    cfg.Prefix,
		Version:   version,
		Logger:    logger.With("component", "agent"),
		Metrics:   m,
		Ownership: &cfg.Ownership,

		MaxRequestsInflight:          cfg.MaxInflight,
		MaxNamespaceRequestsInflight: cfg.MaxNSInflight,
	})
	if err = natsErrs.started(startCtx, r.nc, err); err != nil {
		return errors.Join(fmt.Errorf("start the agent service: %w", err), r.stop(logger))
	}
	r.serving.Store(true)
	logger.Info("serving", "version", version, "url", where, "bucket", cfg.Bucket, "prefix", cfg.Prefix)
	if _, err := fmt.Fprintf(stdout, "leaseagent listening on %s\n", where); err != nil {
		return errors.Join(fmt.Errorf("write to stdout: %w", err), r.stop(logger))
	}

	<-ctx.Done()
	logger.Info("stopping", "cause", context.Cause(ctx))
	if err := r.stop(logger); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// running is what serve has started; stop stops it in order.
type running struct {
	srv     *embedded.Server
	nc      *nats.Conn
	mgr     *actors.Manager
	svc     *agent.Service
	metrics *metrics.Server

	serving atomic.Bool // the agent service is up
}

// ready is the agent's readiness: connected to NATS, the bucket bound, the
// ownership leases read and the service answering. A ready agent owns some
// namespaces or stands by for them: either way it answers, forwarding to
// the owner what it does not own.
func (r *running) ready() error {
	switch {
	case !r.serving.Load():
		return errors.New("starting or stopping")
	case !r.nc.IsConnected():
		return fmt.Errorf("not connected to NATS (%s)", r.nc.Status())
	}
	return nil
}

// stop stops what is running, in order: the service, the manager, the
// connection, the embedded server.
func (r *running) stop(logger *slog.Logger) error {
	var errs []error
	r.serving.Store(false)
	if r.svc != nil {
		if err := r.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop the agent service: %w", err))
		}
	}
	if r.mgr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		err := r.mgr.Stop(ctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("stop the lease manager: %w", err))
		}
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.srv != nil {
		r.srv.Shutdown()
		logger.Debug("embedded NATS server stopped")
	}
	if r.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		if err := r.metrics.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the metrics server: %w", err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// noticesAsDebug logs Info records at Debug: the embedded server's banner
// and notices are detail in the agent's log, its warnings and errors are not.
type noticesAsDebug struct{ slog.Handler }

func (h noticesAsDebug) Enabled(ctx context.Context, level slog.Level) bool {
	return h.Handler.Enabled(ctx, demote(level))
}

func (h noticesAsDebug) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h noticesAsDebug) WithAttrs(attrs []slog.Attr) slog.Handler {
	return noticesAsDebug{h.Handler.WithAttrs(attrs)}
}

func (h noticesAsDebug) WithGroup(name string) slog.Handler {
	return noticesAsDebug{h.Handler.WithGroup(name)}
}

func demote(level slog.Level) slog.Level {
	if level == slog.LevelInfo {
		return slog.LevelDebug
	}
	return level
}

// warnIfFewerReplicas logs a warning when the bucket, created before, has
// fewer replicas than --replicas asks for: agents set a bucket's replicas
// only when they create it, and it survives fewer failures than asked.
func warnIfFewerReplicas(ctx context.Context, b *natskv.Bucket, cfg serveConfig, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	info, err := b.StreamInfo(ctx)
	if err != nil || info.Config.Replicas >= cfg.Replicas {
		return
	}
	logger.Warn("the bucket has fewer replicas than --replicas: agents set them only when they create a bucket, "+
		"so it keeps fewer copies than asked for; raise them with 'nats stream edit' (see docs/operations.md)",
		"bucket", b.Name(), "stream", info.Config.Name, "replicas", info.Config.Replicas, "asked", cfg.Replicas)
}
