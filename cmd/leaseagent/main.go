// Command leaseagent is the lease agent daemon and its operator CLI.
//
// Run with no arguments (or as `leaseagent serve`), it starts an embedded
// NATS server with JetStream on 127.0.0.1:4222, keeps its data under
// ./leaseagent-data with every write fsynced before it is acknowledged, and
// serves the lease protocol on it. When it is ready it prints one line to
// standard output saying where it listens, for example
//
//	leaseagent listening on nats://127.0.0.1:4222 (embedded, data in ./leaseagent-data)
//
// and logs to standard error (the embedded server's own notices at debug
// level, its warnings and errors as such). SIGINT or SIGTERM stops it
// cleanly: it answers the requests in progress, stops the lease actors,
// closes its connection and flushes and stops the embedded server, then
// exits 0; a second signal ends it at once. With --nats-url it uses that NATS
// server (which must have JetStream) instead of starting one, creating the
// bucket if it is missing; --listen and --data-dir cannot be combined with it.
// With --cluster-name, --cluster-listen and --routes the embedded server
// joins a NATS cluster of leaseagents (each with its own embedded server)
// and the bucket can be created with --replicas 3; the ready line then ends
// with the server's name, the cluster's and the route URL:
//
//	leaseagent listening on nats://127.0.0.1:4222 (embedded, data in d, server n1 in cluster c, routes on nats-route://10.0.0.1:6222)
//
// The other subcommands reach a running agent over NATS:
//
//	leaseagent claim NS LEASE HOLDER DURATION  claim or extend a lease (DURATION like 30s)
//	leaseagent release NS LEASE HOLDER         give a held lease up now
//	leaseagent check NS LEASE HOLDER           print the fencing token if HOLDER holds LEASE
//	leaseagent leases NS                       list the held leases of a namespace
//	leaseagent wait NS LEASE                   block until LEASE is not held
//	leaseagent watch [NS]                      print claimed and expired events as they happen
//	leaseagent hold NS LEASE HOLDER DURATION -- CMD [ARGS...]
//	                                           run CMD while holding LEASE (DURATION at least
//	                                           100ms); exit with its status
//	leaseagent status [--json]                 show the NATS nodes, the agents, the namespaces'
//	                                           owners and lease counts (see docs/operations.md)
//	leaseagent version                         print the version (also leaseagent --version)
//
// # Flags and environment
//
// Flags for every command:
//
//	--nats-url URL       NATS server to connect to (default nats://127.0.0.1:4222);
//	                     for serve, an external server to use instead of the embedded one
//	--creds FILE         NATS credentials file
//	--user, --password   NATS user name and password
//	--token TOKEN        NATS authentication token
//	--nkey-seed FILE     NATS nkey seed to authenticate with
//	--tls-ca FILE        CA certificates to verify the server with
//	--tls-cert FILE      client certificate (with --tls-key)
//	--tls-key FILE       client certificate's key (with --tls-cert)
//	--prefix PREFIX      subject prefix of the lease protocol (default lease)
//	--timeout DURATION   how long a command waits for the agent, or serve for
//	                     its store at startup (default 10s); wait and watch
//	                     wait until interrupted unless --timeout is given
//	                     (also as LEASEAGENT_TIMEOUT or in the config file)
//	--log-level LEVEL    debug, info, warn or error (default info)
//	--log-format FORMAT  text or json (default text); lease state changes
//	                     (claimed, expired, released) are logged at info,
//	                     extensions at debug
//	--config FILE        TOML config file (below)
//
// Flags of serve (and of leaseagent without a subcommand):
//
//	--listen HOST:PORT      address of the embedded server (default 127.0.0.1:4222;
//	                        an empty host means every interface, port 0 a free port)
//	--data-dir DIR          JetStream directory of the embedded server (default ./leaseagent-data)
//	--bucket NAME           KV bucket holding the leases (default leases)
//	--replicas N            copies of the bucket, when it is created (default 1)
//	--max-duration DURATION longest lease a claim may ask for (default 1h)
//	--max-namespaces N      most namespaces served at once (default 10000)
//	--idle-timeout DURATION how long an idle namespace keeps its memory (default 10m)
//	--max-requests-inflight N
//	                        most requests in flight at once; more are refused at
//	                        once, "unavailable", retryable (default 1024)
//	--max-namespace-requests-inflight N
//	                        most requests of one namespace in flight at once, a
//	                        list counting as an eighth of it (default 128; at most
//	                        --max-requests-inflight)
//	--metrics-listen HOST:PORT
//	                        serve Prometheus /metrics, /healthz and /readyz there
//	                        (off by default; 127.0.0.1:9464 is usual)
//	--server-name NAME      name of the embedded NATS server, unique in its cluster
//	                        and kept across restarts (default: the host name when
//	                        clustering, else leaseagent)
//	--start-timeout DURATION
//	                        how long serve waits at startup for its store (default:
//	                        --timeout, or 2m when clustering)
//
// Flags of serve for clustered embedded mode (all three of the first ones turn
// it on; not with --nats-url; see docs/operations.md):
//
//	--cluster-name NAME     the NATS cluster to join, the same on every node
//	--cluster-listen HOST:PORT
//	                        the embedded server's route listener (port 0 picks a free port)
//	--routes URL,...        nats-route://host:port of the cluster's nodes, best the
//	                        same full list on every node, its own included
//	--cluster-user USER, --cluster-password PASSWORD
//	                        credentials every route must present (the same on every node)
//
// --replicas above 1 needs a cluster (or --nats-url). While the cluster
// forms, serve retries creating or binding the bucket, logging "waiting for
// the JetStream cluster" every few seconds, until --start-timeout. When the
// route listener is on an address other than loopback without
// --cluster-user, serve logs a warning.
//
// Flags of serve for the embedded server's security (not with --nats-url;
// see docs/security.md):
//
//	--auth-user USER, --auth-password PASSWORD
//	                        admit clients presenting this user and password
//	--auth-token TOKEN      admit clients presenting this token
//	--auth-nkey KEY         admit the client with this public user nkey (repeatable)
//	--auth-nkey-seed FILE   the agent's own nkey seed; its public key is admitted
//	--tls-listen-cert FILE, --tls-listen-key FILE
//	                        require TLS, with this certificate and key
//	--tls-listen-ca FILE    require client certificates signed by this CA
//
// When the embedded server listens on an address other than loopback
// without authentication, serve logs a warning.
//
// Every flag can also be set by an environment variable named LEASEAGENT_
// followed by the flag's name in upper case with '-' replaced by '_', for
// example LEASEAGENT_NATS_URL or LEASEAGENT_DATA_DIR. A flag given on the
// command line wins over its variable; an empty variable counts as unset.
// A LEASEAGENT_ variable that is no flag's (a misspelt one) is ignored with
// a warning in the log, naming it: not an error, as an unknown key of the
// config file is, since the environment is inherited by every process
// started from it and may hold variables meant for another version.
// The client authentication and TLS flags (--creds to --tls-key) apply to
// connections over TCP: every operator command's, and serve's to an
// external server; serve reaches its embedded server in-process.
//
// # Config file
//
// --config FILE (or LEASEAGENT_CONFIG) names a TOML file whose top-level
// keys are flags, named with '_' for '-' (max_duration = "5m",
// auth_nkey = ["U..."]), and which may declare a policy per namespace:
// minimum and maximum durations, lease and holder name patterns, and
// whether undeclared namespaces are allowed (see package policy and
// docs/leaseagent.example.toml). A flag on the command line wins over its
// environment variable, which wins over the file, which wins over the
// default. Unknown keys are errors. Claims that break the policy are
// refused with an error naming the rule, exit code 2.
//
// # Output
//
// claim, release and wait print nothing when they succeed (wait with
// --timeout exits 1 if the lease is still held when it runs out, as hold
// does; a command stopped by SIGINT or SIGTERM before it was done says
// "interrupted" and exits 130 or 143). check prints the
// fencing token (the KV revision that made HOLDER the holder). leases prints
// a table of LEASE, HOLDER, EXPIRES-IN and REVISION sorted by lease. watch
// prints one line per event:
//
//	2026-01-02T03:04:05Z claimed ns/lease holder=h revision=12 duration=1m0s
//	2026-01-02T03:05:05Z expired ns/lease holder=h revision=12
//
// status prints the NATS server it reached, the bucket's stream (replicas
// and leader), and tables of the stream's nodes (NODE, ROLE, CURRENT,
// ACTIVE, LAG), of the agents that answered discovery (AGENT, VERSION,
// INSTANCE, OWNS) and of the namespaces (NAMESPACE, OWNER, LEASES); with
// --json, the same as one JSON object. Its own flags are --bucket (default
// leases; it never creates the bucket), --json and --discovery-wait (how long
// it collects the agents' answers, default 500ms). When no agent answers it
// still prints what it read, and exits 3 saying so (is --prefix right?).
// docs/operations.md explains the columns.
//
// Names may hold control characters (docs/protocol.md). Every table, watch
// line and error line prints a name as it is if it is made of printable,
// non-space characters and does not begin with '"'; any other name is
// quoted as a Go string, so a lease named "x\x1b[2J" is printed
// "x\x1b[2J" and never clears the terminal. A namespace holding '/' is
// also quoted where it is followed by /LEASE (watch, error lines), and one
// holding ',' in status's OWNS list, so the first '/' or ',' outside quotes
// separates. status --json and the logs carry names as they are, escaped
// by JSON and by the log format.
//
// Errors go to standard error as one line, "leaseagent: <message>".
//
// # Exit codes
//
// (Also in 'leaseagent --help'.)
//
//	0      success; watch and serve also when stopped by SIGINT or SIGTERM
//	1      no: the claim was denied, the holder does not hold the lease, or
//	       wait or hold gave up after --timeout while another held it
//	2      usage error: wrong arguments, a bad duration, flag, variable, config
//	       file or --nats-url, a name or duration the agent or its policy
//	       rejects, credentials the NATS server refuses, or a subject they may
//	       not use
//	3      unavailable: no NATS server or no agent answered in time (also wait
//	       or hold whose --timeout ran out before an agent answered, and
//	       status that no agent answered)
//	4      any other error
//	126    hold: CMD was found but could not be run
//	127    hold: CMD was not found
//	128+N  stopped by signal N before it was done: 130 for SIGINT, 143 for
//	       SIGTERM
//
// Once hold has run CMD, it exits with CMD's status (128+N if signal N ended
// it), or 1 if it lost the lease while CMD ran.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/protocol"
)

// version is the version leaseagent reports; set it at build time with
// -ldflags "-X main.version=1.2.3". It must be a semantic version, since the
// agent's NATS micro service announces it.
var version = "0.1.0-dev"

// Exit codes (documented in the package doc, the root's --help and the
// README).
const (
	exitOK          = 0
	exitNotHeld     = 1 // the answer is no: denied, not held, still held
	exitUsage       = 2
	exitUnavailable = 3
	exitOther       = 4
	exitCannotRun   = 126 // hold: CMD found but could not be run
	exitNotFound    = 127 // hold: CMD not found
	exitSignal      = 128 // plus the signal's number: interrupted
)

// exitCodesHelp is the root's help on exit codes, as in the package doc.
const exitCodesHelp = `Exit codes:
  0      success; watch and serve also when stopped by SIGINT or SIGTERM
  1      no: the claim was denied, the holder does not hold the lease, or
         wait or hold gave up after --timeout while another held it
  2      usage error: wrong arguments, a bad duration, flag, variable, config
         file or --nats-url, a name or duration the agent or its policy
         rejects, credentials the NATS server refuses, or a subject they may
         not use
  3      unavailable: no NATS server or no agent answered in time (also wait
         or hold whose --timeout ran out before an agent answered, and
         status that no agent answered)
  4      any other error
  126    hold: CMD was found but could not be run
  127    hold: CMD was not found
  128+N  stopped by signal N before it was done: 130 for SIGINT, 143 for
         SIGTERM
Once hold has run CMD, it exits with CMD's status (128+N if signal N ended
it), or 1 if it lost the lease while CMD ran.`

// errStillHeld is the error of wait, and of hold waiting for its lease,
// when --timeout runs out while the lease is held: the same "no" as a
// denied claim (exit 1).
var errStillHeld = errors.New("still held")

// envPrefix begins the environment variable of every flag.
const envPrefix = "LEASEAGENT_"

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-signals
		// After the first signal, a second one gets the default behaviour
		// and ends the process at once.
		signal.Stop(signals)
		cancel(&signalled{sig: sig.(syscall.Signal)})
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}

// signalled is the cause of the context of a command stopped by a signal.
type signalled struct{ sig syscall.Signal }

func (s *signalled) Error() string { return s.sig.String() + " signal received" }

// Is makes a signal's cause a context.Canceled, as signal.NotifyContext's is.
func (s *signalled) Is(target error) bool { return target == context.Canceled }

// interrupted is the error of a command that a signal stopped before it
// was done. It exits 128 plus the signal's number (130 for SIGINT, 143
// for SIGTERM), as a shell reports a command the signal killed: not 0,
// since it did not do what it was asked.
func interrupted(ctx context.Context) error {
	return fmt.Errorf("interrupted: %w", context.Cause(ctx))
}

// run executes the command line args and returns the exit code. Output goes
// to stdout, logs and errors to stderr; environ is the environment, as
// os.Environ returns it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) int {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; !dup { // the first wins, as in os.Getenv
			env[k] = v
		}
	}
	a := &app{stdout: stdout, stderr: stderr, environ: environ, lookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}
	root := newRootCommand(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var (
		cmdExit *commandExit
		sig     *signalled
	)
	if err != nil && !errors.As(err, &cmdExit) && !errors.As(err, &sig) &&
		errors.Is(err, context.Canceled) && errors.As(context.Cause(ctx), &sig) {
		// A command the signal cut short (serve and watch stop on it
		// and return nil).
		err = fmt.Errorf("%w: %w", err, interrupted(ctx))
	}
	if err != nil && !errors.As(err, &cmdExit) {
		msg := err.Error()
		var usage *usageError
		if errors.As(err, &usage) {
			msg += a.sourcesOf(msg)
		}
		// The CLI names flags, not the fields of package agent's Config
		// they set (agent.Start's "Ownership.AgentID: another agent
		// already runs as ...").
		msg = ownershipFlagNames.Replace(msg)
		fmt.Fprintf(stderr, "leaseagent: %s\n", escapeControls(strings.ReplaceAll(msg, "\n", "; ")))
	}
	return exitCode(err)
}

// sourcesOf says where each flag named in msg (as --name) was set, if not
// on the command line: "; --nats-url is set by LEASEAGENT_NATS_URL".
func (a *app) sourcesOf(msg string) string {
	names := make([]string, 0, len(a.sources))
	for name := range a.sources {
		names = append(names, name)
	}
	slices.Sort(names)
	var notes strings.Builder
	for _, name := range names {
		if mentionsFlag(msg, name) {
			fmt.Fprintf(&notes, "; --%s is set by %s", name, a.sources[name])
		}
	}
	return notes.String()
}

// mentionsFlag says whether msg names the flag --name, and not only a
// longer flag that begins with it (--auth-nkey-seed for --auth-nkey).
func mentionsFlag(msg, name string) bool {
	flag := "--" + name
	for rest := msg; ; {
		i := strings.Index(rest, flag)
		if i < 0 {
			return false
		}
		rest = rest[i+len(flag):]
		if rest == "" || !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789-", rune(rest[0])) {
			return true
		}
	}
}

// noteSources records, as set by source, each flag of fs that set (a
// function setting flags from the environment or the config file) changed.
func (a *app) noteSources(fs *pflag.FlagSet, source func(*pflag.Flag) string, set func() error) error {
	unset := make(map[string]bool)
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Changed {
			unset[f.Name] = true
		}
	})
	err := set()
	fs.VisitAll(func(f *pflag.Flag) {
		if unset[f.Name] && f.Changed {
			if a.sources == nil {
				a.sources = make(map[string]string)
			}
			a.sources[f.Name] = source(f)
		}
	})
	return err
}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	var (
		usage   *usageError
		cmdExit *commandExit
		notRun  *commandNotRun
		sig     *signalled
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &cmdExit):
		return cmdExit.code
	case errors.As(err, &notRun):
		return notRun.code
	case errors.As(err, &sig):
		return exitSignal + int(sig.sig)
	case errors.Is(err, lease.ErrClaimDenied), errors.Is(err, lease.ErrNotHeld), errors.Is(err, errStillHeld):
		return exitNotHeld
	case errors.As(err, &usage), errors.Is(err, protocol.ErrInvalidArgument):
		return exitUsage
	case isAuthError(err):
		// Credentials the server refuses, or a subject they do not
		// permit: a mistake in the configuration, which retrying will
		// not mend.
		return exitUsage
	case errors.Is(err, protocol.ErrUnavailable),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, syscall.ECONNREFUSED),
		isNetTimeout(err):
		return exitUnavailable
	default:
		return exitOther
	}
}

// isNetTimeout says whether err is a network operation that timed out: a
// NATS server that accepted the connection but did not answer in time, or
// one that cannot be reached at all. (Not context.DeadlineExceeded, which
// is a net.Error too: wait's "still held" is not unavailability.)
func isNetTimeout(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Timeout()
}

// usageError is a mistake on the command line: wrong arguments, a bad flag
// or environment variable.
type usageError struct {
	command string // the command's path, for the pointer to its help
	err     error
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%v (see '%s --help')", e.err, e.command)
}

func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError for cmd.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{command: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// newRootCommand returns the leaseagent command with its subcommands.
func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "leaseagent",
		Short: "Distributed leases on NATS: the agent daemon and its operator CLI",
		Long: "leaseagent without a subcommand runs the agent (see 'leaseagent serve --help').\n" +
			"The other subcommands reach a running agent over NATS.\n" +
			"Every flag can also be set as LEASEAGENT_<FLAG>, e.g. LEASEAGENT_NATS_URL.\n\n" +
			exitCodesHelp,
		Args:                       rootArgs,
		RunE:                       a.runServe,
		PersistentPreRunE:          a.bindEnv,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
		SilenceErrors:              true,
		CompletionOptions:          cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	// --version prints what the version command prints.
	root.Version = version
	root.SetVersionTemplate("{{.Version}}\n")
	root.Flags().Bool(versionFlag, false, "print the version (as 'leaseagent version')")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if d, ok := negativeDuration(cmd, err); ok {
			return usagef(cmd, "DURATION must be positive, not %s", d)
		}
		return &usageError{command: cmd.CommandPath(), err: err}
	})
	a.addGlobalFlags(root.PersistentFlags())
	a.addServeFlags(root.Flags())
	root.AddCommand(
		newServeCommand(a),
		newClaimCommand(a),
		newReleaseCommand(a),
		newCheckCommand(a),
		newLeasesCommand(a),
		newWaitCommand(a),
		newWatchCommand(a),
		newHoldCommand(a),
		newStatusCommand(a),
		newVersionCommand(a),
	)
	return root
}

// negativeDuration says whether err is the flag parser's complaint about a
// negative DURATION given to claim or hold ("unknown shorthand flag: '5' in
// -5s", since it begins with '-'), and returns that argument.
func negativeDuration(cmd *cobra.Command, err error) (string, bool) {
	if cmd.Name() != "claim" && cmd.Name() != "hold" {
		return "", false
	}
	msg, ok := strings.CutPrefix(err.Error(), "unknown shorthand flag: ")
	if !ok {
		return "", false
	}
	_, arg, ok := strings.Cut(msg, " in ")
	if !ok {
		return "", false
	}
	if _, err := time.ParseDuration(arg); err != nil {
		return "", false
	}
	return arg, true
}

// rootArgs rejects arguments that name no subcommand.
func rootArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		return usagef(cmd, "unknown command %q; did you mean %s?", args[0], strings.Join(s, " or "))
	}
	return usagef(cmd, "unknown command %q", args[0])
}

// exactArgs requires one argument for each name.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef(cmd, "%s needs %s, got %s", cmd.Name(), argList(names), argCount(len(args)))
		}
		return nil
	}
}

// rangeArgs requires the first min names and allows the rest.
func rangeArgs(min int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > len(names) {
			return usagef(cmd, "%s takes %s, got %s", cmd.Name(), argList(names), argCount(len(args)))
		}
		return nil
	}
}

func argList(names []string) string {
	if len(names) == 0 {
		return "no arguments"
	}
	return strings.Join(names, " ")
}

func argCount(n int) string {
	if n == 1 {
		return "1 argument"
	}
	return fmt.Sprintf("%d arguments", n)
}

// bindEnv is the root's PersistentPreRunE: it sets the flags of cmd from the
// environment.
func (a *app) bindEnv(cmd *cobra.Command, _ []string) error {
	fs := cmd.Flags()
	fromEnv := func(f *pflag.Flag) string { return envName(f.Name) }
	if err := a.noteSources(fs, fromEnv, func() error { return bindEnv(fs, a.lookupEnv) }); err != nil {
		return &usageError{command: cmd.CommandPath(), err: err}
	}
	// The config file fills in what the command line and the environment
	// left unset: flag > environment > config file > default.
	fromFile := func(f *pflag.Flag) string {
		return strings.ReplaceAll(f.Name, "-", "_") + " in " + a.configPath
	}
	if err := a.noteSources(fs, fromFile, func() error { return a.applyConfig(cmd) }); err != nil {
		return err
	}
	if err := a.checkLogFormat(cmd); err != nil {
		return err
	}
	a.warnUnknownEnv(cmd.Root())
	return a.checkPrefix(cmd)
}

// warnUnknownEnv logs a warning for each LEASEAGENT_ variable of the
// environment that is no flag's, of any command: a misspelt one would
// otherwise be ignored without a word. Not an error, as an unknown key of
// the config file is: the environment is inherited by every process
// started from it, and may hold variables of a newer leaseagent, or of
// scripts around it, that this one must not fail on.
func (a *app) warnUnknownEnv(root *cobra.Command) {
	known := make(map[string]bool)
	for name := range rootFlags(root) {
		if settable(name) {
			known[envName(name)] = true
		}
	}
	var unknown []string
	for _, kv := range a.environ {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && value != "" && !known[name] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		a.logger().Warn("unknown environment variable, ignored: no flag has it (each flag's is LEASEAGENT_ and the flag's name, see 'leaseagent --help')",
			"variable", name)
	}
}

// bindEnv sets each flag of fs that was not given on the command line from
// its environment variable (see envName), if that is set and not empty.
// It returns an error naming the variable of the first bad value.
func bindEnv(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) error {
	var first error
	fs.VisitAll(func(f *pflag.Flag) {
		if first != nil || f.Changed || !settable(f.Name) {
			return
		}
		name := envName(f.Name)
		value, ok := lookupEnv(name)
		if !ok || value == "" {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			first = fmt.Errorf("environment variable %s: %w", name, err)
		}
	})
	return first
}

// settable says whether a flag can be set by its environment variable or
// in the config file: not --help and --version, which ask for something
// else than what the command does.
func settable(flag string) bool { return flag != "help" && flag != versionFlag }

// versionFlag is the root's --version, which prints the version as the
// version command does.
const versionFlag = "version"

// envName returns the environment variable of a flag: LEASEAGENT_NATS_URL
// for nats-url.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func newVersionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, version)
			return err
		},
	}
}

// app is the state shared by the commands: where output goes and the
// values of the flags.
type app struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	environ        []string // "NAME=value", to find unknown LEASEAGENT_ variables; nil: none

	// sources says where each flag not given on the command line was set:
	// its environment variable, or its key in the config file.
	sources map[string]string

	// Global flags.
	natsURL   string
	creds     string
	user      string
	password  string
	token     string
	tlsCA     string
	tlsCert   string
	tlsKey    string
	prefix    string
	timeout   time.Duration
	logLevel  logLevel
	logFormat string

	// Flags of serve.
	listen        string
	dataDir       string
	bucket        string
	replicas      int
	maxDuration   time.Duration
	metricsListen string
	maxNamespaces int
	idleTimeout   time.Duration
	markerTTL     time.Duration
	maxInflight   int // --max-requests-inflight
	maxNSInflight int // --max-namespace-requests-inflight

	// The config file (config.go), the authentication and TLS flags
	// not above (security.go) and the cluster flags (cluster.go).
	fileState
	securityFlags
	clusterFlags
	ownershipFlags
	statusFlags
}

// Defaults of the flags.
const (
	defaultNATSURL     = "nats://127.0.0.1:4222"
	defaultTimeout     = 10 * time.Second
	defaultListen      = "127.0.0.1:4222"
	defaultDataDir     = "./leaseagent-data"
	defaultBucket      = "leases"
	defaultReplicas    = 1
	defaultMaxDuration = time.Hour
)

// addGlobalFlags defines the flags every command takes.
func (a *app) addGlobalFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.natsURL, "nats-url", defaultNATSURL, "NATS server to connect to; for serve, an external server with JetStream to use instead of the embedded one")
	fs.StringVar(&a.creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(&a.user, "user", "", "NATS user name")
	fs.StringVar(&a.password, "password", "", "NATS password")
	fs.StringVar(&a.token, "token", "", "NATS authentication token")
	fs.StringVar(&a.tlsCA, "tls-ca", "", "CA certificates `file` to verify the NATS server with")
	fs.StringVar(&a.tlsCert, "tls-cert", "", "client certificate `file` (with --tls-key)")
	fs.StringVar(&a.tlsKey, "tls-key", "", "client certificate's key `file` (with --tls-cert)")
	fs.StringVar(&a.prefix, "prefix", protocol.DefaultPrefix, "subject prefix of the lease protocol")
	fs.DurationVar(&a.timeout, "timeout", defaultTimeout, "how long to wait for the agent (serve: for the store at startup; wait and watch: no limit unless given; hold: for the lease, no limit unless given)")
	a.logLevel = logLevel(slog.LevelInfo)
	fs.Var(&a.logLevel, "log-level", "log `level` on stderr: debug, info, warn or error")
	fs.StringVar(&a.logFormat, "log-format", "text", "log `format` on stderr: text or json")
	a.addClientSecurityFlags(fs)
	a.addConfigFlag(fs)
}

// logger returns the logger that writes to stderr at --log-level, in
// --log-format (checked by checkLogFormat before anything logs).
func (a *app) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.Level(a.logLevel)}
	if a.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(a.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(a.stderr, opts))
}

// checkLogFormat rejects a --log-format other than text or json.
func (a *app) checkLogFormat(cmd *cobra.Command) error {
	if a.logFormat != "text" && a.logFormat != "json" {
		return usagef(cmd, "--log-format must be text or json, not %q", a.logFormat)
	}
	return nil
}

// checkPrefix rejects a --prefix that cannot begin subjects, before any
// command connects or serve starts anything: an agent would otherwise be
// started on subjects no client can use, and status would find no agents.
func (a *app) checkPrefix(cmd *cobra.Command) error {
	if !protocol.ValidPrefix(a.prefix) {
		return usagef(cmd, "--prefix: %q is not a NATS subject prefix: one or more '.'-separated tokens without spaces or wildcards", a.prefix)
	}
	return nil
}

// logLevel is the value of --log-level.
type logLevel slog.Level

func (l *logLevel) String() string { return strings.ToLower(slog.Level(*l).String()) }

func (l *logLevel) Type() string { return "level" }

func (l *logLevel) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		*l = logLevel(slog.LevelDebug)
	case "info":
		*l = logLevel(slog.LevelInfo)
	case "warn", "warning":
		*l = logLevel(slog.LevelWarn)
	case "error":
		*l = logLevel(slog.LevelError)
	default:
		return fmt.Errorf("unknown log level %q: want debug, info, warn or error", s)
	}
	return nil
}
