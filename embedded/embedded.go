package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults applied by [Start] to zero-valued [Config] fields.
const (
	DefaultName         = "leaseagent"
	DefaultHost         = "127.0.0.1"
	DefaultPort         = 4222
	DefaultReadyTimeout = 10 * time.Second
)

// MaxMaxPayload is the largest [Config.MaxPayload]: nats-server refuses a
// payload limit above its per-client pending limit, 64 MiB.
const MaxMaxPayload = server.MAX_PENDING_SIZE

// RandomPort, as [Config.Port], makes the server listen on a free port
// chosen by the operating system.
const RandomPort = -1

// LevelTrace is the slog level at which the server's trace lines (every
// protocol message) are logged. The server only produces them when the
// configured logger is enabled at this level.
const LevelTrace = slog.LevelDebug - 4

// Config says how to run the server. Zero values take defaults where stated.
type Config struct {
	// Name is the server name. Default "leaseagent". It must not contain
	// white space. With [Config.Cluster] it is required, must be unique in
	// the cluster and must stay the same across restarts.
	Name string

	// Host is the address to listen on. Default "127.0.0.1".
	Host string

	// Port is the client port. 0 means 4222, the product default; -1
	// ([RandomPort]) means a random free port, which is what tests want.
	Port int

	// DataDir is the JetStream store directory. It is required: an empty
	// store directory would make the server fall back to a directory under
	// the system temporary directory, shared by every server that does the
	// same. Start creates it (mode 0750) if needed and checks that it is
	// writable.
	DataDir string

	// NoSync turns off SyncAlways. By default every JetStream write is
	// fsynced before it is acknowledged; with NoSync the server fsyncs
	// periodically instead, and acknowledged writes can be lost if the
	// machine fails.
	NoSync bool

	// MaxPayload is the largest message body the server accepts, in
	// bytes; 0 is NATS's default, 1 MiB. At most 64 MiB ([MaxMaxPayload]).
	MaxPayload int32

	// DontListen starts the server without a TCP listener; only
	// connections made with [Server.Connect] reach it.
	DontListen bool

	// ReadyTimeout is how long Start waits for the server to accept
	// connections. Default 10s.
	ReadyTimeout time.Duration

	// Logger, if set, receives the server's own log lines: notices at
	// Info, warnings at Warn, errors and fatal errors at Error, debug lines
	// at Debug and trace lines at [LevelTrace]. Debug and trace lines are
	// only produced if Logger is enabled at those levels. If Logger is nil
	// the server logs nothing.
	Logger *slog.Logger

	// Auth, if enabled, makes every client authenticate, including those
	// made with [Server.Connect]; see [Auth]. The zero value admits
	// anyone who can reach the port.
	Auth Auth

	// TLS, if enabled, makes the client port speak TLS only; see [TLS].
	TLS TLS

	// Cluster, if enabled, joins the server to a NATS cluster with
	// JetStream clustering; see [Cluster]. The zero value runs the server
	// standalone.
	Cluster Cluster
}

// Validate reports every invalid field of c, each error naming the field,
// for example "embedded: Config.DataDir: must not be empty". Zero values
// that have defaults are valid.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("embedded: Config.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.IndexFunc(c.Name, unicode.IsSpace) >= 0 {
		bad("Name", "must not contain white space, got %q", c.Name)
	}
	if c.Port < RandomPort || c.Port > 65535 {
		bad("Port", "must be -1 (random), 0 (default 4222) or 1..65535, got %d", c.Port)
	}
	if c.MaxPayload < 0 || c.MaxPayload > MaxMaxPayload {
		bad("MaxPayload", "must be 0 (default 1 MiB) or 1..%d (64 MiB), got %d", MaxMaxPayload, c.MaxPayload)
	}
	if c.DataDir == "" {
		bad("DataDir", "must not be empty")
	}
	if c.ReadyTimeout < 0 {
		bad("ReadyTimeout", "must not be negative, got %s", c.ReadyTimeout)
	}
	c.validateSecurity(bad)
	c.validateCluster(bad)
	return errors.Join(errs...)
}

// withDefaults returns c with defaults filled in for zero-valued fields.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	c.Cluster = clusterWithDefaults(c.Cluster, c.Host)
	return c
}

// Server is a running in-process NATS server with JetStream. Create it with
// [Start] and stop it with [Server.Shutdown].
type Server struct {
	ns     *server.Server
	lock   io.Closer // held on DataDir while the server runs
	unlock sync.Once // closes lock: callers of Shutdown wait for the first
	cfg    Config    // with defaults applied and DataDir made absolute
	addr   string    // bound host:port; "" with DontListen
	url    string    // nats://host:port; "" with DontListen

	clusterAddr string // route listener's bound host:port; "" if standalone
	clusterURL  string // nats-route://host:port; "" if standalone
}

// Start validates cfg, prepares cfg.DataDir, starts the server and waits up
// to cfg.ReadyTimeout until it accepts connections. On error nothing is
// left running.
func Start(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	dir, err := prepareDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dir
	// Two servers writing one store would each acknowledge writes the
	// other overwrites: one store, one server.
	lock, err := lockDataDir(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = lock.Close()
		}
	}()

	hostPort := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	if !cfg.DontListen && cfg.Port > 0 {
		// The server reports a failed listen only through its log, so try
		// the port first to return a precise, wrapped error. Should the
		// port be taken in between, the log is consulted below.
		if err := checkListen(hostPort); err != nil {
			return nil, err
		}
	}
	if cfg.Cluster.Enabled() && cfg.Cluster.Port > 0 {
		if err := checkListen(net.JoinHostPort(cfg.Cluster.Host, strconv.Itoa(cfg.Cluster.Port))); err != nil {
			return nil, err
		}
	}

	opts := &server.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Host,
		Port:                   cfg.Port,
		DontListen:             cfg.DontListen,
		JetStream:              true,
		StoreDir:               cfg.DataDir,
		SyncAlways:             !cfg.NoSync,
		NoLog:                  cfg.Logger == nil,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
		MaxPayload:             cfg.MaxPayload,
	}
	if err := cfg.applySecurity(opts); err != nil {
		return nil, err
	}
	if err := cfg.applyCluster(opts); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: configure nats-server: %w", err)
	}
	logs := &logAdapter{log: cfg.Logger}
	ns.SetLoggerV2(logs, logs.enabled(slog.LevelDebug), logs.enabled(LevelTrace), false)

	// Start returns once the server has set up JetStream and its listener,
	// or has given up on either (reported through Fatalf).
	ns.Start()

	stop := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	if err := logs.fatalErr(); err != nil {
		stop()
		return nil, startError(hostPort, err)
	}
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		stop()
		if err := logs.fatalErr(); err != nil {
			return nil, startError(hostPort, err)
		}
		return nil, fmt.Errorf("embedded: nats-server not ready for connections after %s", cfg.ReadyTimeout)
	}

	s := &Server{ns: ns, cfg: cfg, lock: lock}
	if !cfg.DontListen {
		tcp, ok := ns.Addr().(*net.TCPAddr)
		if !ok {
			stop()
			return nil, fmt.Errorf("embedded: nats-server has no TCP listener on %s", hostPort)
		}
		s.addr = tcp.String()
		s.url = (&url.URL{Scheme: "nats", Host: dialAddr(tcp)}).String()
	}
	if cfg.Cluster.Enabled() {
		tcp := ns.ClusterAddr()
		if tcp == nil {
			stop()
			return nil, fmt.Errorf("embedded: nats-server has no route listener on %s",
				net.JoinHostPort(cfg.Cluster.Host, strconv.Itoa(cfg.Cluster.Port)))
		}
		s.clusterAddr = tcp.String()
		s.clusterURL = (&url.URL{Scheme: "nats-route", Host: dialAddr(tcp)}).String()
	}
	return s, nil
}

// ClientURL returns the URL clients dial over TCP, nats://host:port, with
// the actual port (also for [RandomPort]). If the server listens on all
// interfaces the host is the loopback address. It returns "" when the
// server was started with DontListen.
func (s *Server) ClientURL() string { return s.url }

// Addr returns the host:port the server's TCP listener is bound to, or ""
// when the server was started with DontListen.
func (s *Server) Addr() string { return s.addr }

// DataDir returns the absolute JetStream store directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Connect opens a client connection through memory rather than TCP, so it
// works with DontListen too. opts are applied before the in-process
// option, which always wins. Close the connection before or after
// Shutdown; after Shutdown it can no longer reconnect.
//
// When [Config.Auth] is enabled, opts must carry credentials it admits
// (nats.UserInfo, nats.Token, nats.Nkey or nats.NkeyOptionFromSeed);
// credentials it does not admit fail at once with an error wrapping
// nats.ErrAuthorization.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if err := s.checkCredentials(opts); err != nil {
		return nil, fmt.Errorf("embedded: connect in-process to %s: %w", s.cfg.Name, err)
	}
	all := make([]nats.Option, 0, len(opts)+1)
	all = append(all, opts...)
	all = append(all, nats.InProcessServer(s.ns))
	u := s.url
	if u == "" {
		u = nats.DefaultURL // required by the client, never dialled
	}
	nc, err := nats.Connect(u, all...)
	if err != nil {
		return nil, fmt.Errorf("embedded: connect in-process to %s: %w", s.cfg.Name, err)
	}
	return nc, nil
}

// Interest reports whether a message published on subject now would reach
// a subscriber: a client of this server or, in a cluster, of a routed one
// (as far as this server has heard). It reads the server's subscription
// table in-process, sending nothing. All clients of an embedded server are
// in one account, so every one is counted.
func (s *Server) Interest(subject string) bool {
	return s.ns.GlobalAccount().SubscriptionInterest(subject)
}

// NATSServer returns the underlying nats-server, for what this package
// does not cover. Stop the server with [Server.Shutdown], which also waits
// for the shutdown to complete.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Shutdown stops the server and returns once it has fully stopped. It is
// idempotent and safe to call from several goroutines at once: every call
// returns only after shutdown has completed. It is a no-op on a nil
// *Server.
func (s *Server) Shutdown() {
	if s == nil || s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.unlock.Do(func() { _ = s.lock.Close() })
}

// prepareDataDir makes dir absolute, creates it and checks it is writable.
func prepareDataDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("embedded: data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return "", fmt.Errorf("embedded: data dir %s: cannot create: %w", abs, err)
	}
	f, err := os.CreateTemp(abs, ".write-check-*")
	if err != nil {
		return "", fmt.Errorf("embedded: data dir %s: not writable: %w", abs, err)
	}
	name := f.Name()
	cerr := f.Close()
	rerr := os.Remove(name)
	if err := errors.Join(cerr, rerr); err != nil {
		return "", fmt.Errorf("embedded: data dir %s: not writable: %w", abs, err)
	}
	return abs, nil
}

// checkListen reports whether hostPort can be listened on.
func checkListen(hostPort string) error {
	l, err := net.Listen("tcp", hostPort)
	if err != nil {
		return listenError(hostPort, err)
	}
	if err := l.Close(); err != nil {
		return listenError(hostPort, err)
	}
	return nil
}

// listenError names the address and wraps the system error, dropping the
// redundant "listen tcp ADDR:" prefix of a *net.OpError.
func listenError(hostPort string, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	return fmt.Errorf("embedded: listen on %s: %w", hostPort, err)
}

// startError turns a fatal error logged by the server during Start into
// the error Start returns.
func startError(hostPort string, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "listen" {
		if opErr.Addr != nil {
			// The listener that failed, which may be the route
			// listener rather than the client one.
			hostPort = opErr.Addr.String()
		}
		return listenError(hostPort, opErr)
	}
	return fmt.Errorf("embedded: start nats-server: %w", err)
}

// dialAddr returns tcp as an address a local client can dial: an
// unspecified IP (all interfaces) becomes the loopback address.
func dialAddr(tcp *net.TCPAddr) string {
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			ip = net.IPv6loopback
		} else {
			ip = net.IPv4(127, 0, 0, 1)
		}
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// logAdapter implements server.Logger on top of an optional *slog.Logger
// and remembers the first fatal error, which the server reports only
// through its log.
type logAdapter struct {
	log *slog.Logger // nil: discard

	mu    sync.Mutex
	fatal error
}

var _ server.Logger = (*logAdapter)(nil)

func (a *logAdapter) enabled(level slog.Level) bool {
	return a.log != nil && a.log.Enabled(context.Background(), level)
}

func (a *logAdapter) emit(level slog.Level, format string, v []any) {
	if !a.enabled(level) {
		return
	}
	a.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (a *logAdapter) Noticef(format string, v ...any) { a.emit(slog.LevelInfo, format, v) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.emit(slog.LevelWarn, format, v) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.emit(slog.LevelError, format, v) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.emit(slog.LevelDebug, format, v) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.emit(LevelTrace, format, v) }

// Fatalf logs at Error level and records the error; unlike the
// nats-server's own logger it does not exit the process.
func (a *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.mu.Lock()
	if a.fatal == nil {
		a.fatal = &fatalError{msg: msg, cause: firstError(v)}
	}
	a.mu.Unlock()
	if a.enabled(slog.LevelError) {
		a.log.Error(msg, slog.Bool("fatal", true))
	}
}

func (a *logAdapter) fatalErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fatal
}

// fatalError is a fatal log line of the server; it unwraps to the first
// error among the line's arguments, if any.
type fatalError struct {
	msg   string
	cause error
}

func (e *fatalError) Error() string { return e.msg }
func (e *fatalError) Unwrap() error { return e.cause }

func firstError(v []any) error {
	for _, x := range v {
		if err, ok := x.(error); ok {
			return err
		}
	}
	return nil
}
