package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease/embedded"
)

// securityFlags are the authentication and TLS flags beside the client
// ones in app (--creds, --user, --password, --token, --tls-*).
type securityFlags struct {
	// Client: the identity an operator command, or serve with --nats-url,
	// presents.
	nkeySeed string

	// Embedded server: who it admits, and its TLS.
	authUser      string
	authPassword  string
	authToken     string
	authNKeys     []string
	authNKeySeed  string
	tlsListenCert string
	tlsListenKey  string
	tlsListenCA   string
}

// serveSecurityFlags are the flags of the embedded server's security;
// they cannot be combined with --nats-url.
var serveSecurityFlags = []string{
	"auth-user", "auth-password", "auth-token", "auth-nkey", "auth-nkey-seed",
	"tls-listen-cert", "tls-listen-key", "tls-listen-ca",
}

// addClientSecurityFlags defines the client flags of every command that
// app does not.
func (a *app) addClientSecurityFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.nkeySeed, "nkey-seed", "", "NATS nkey seed `file` to authenticate with")
}

// addServeSecurityFlags defines the embedded server's authentication and
// TLS flags.
func (a *app) addServeSecurityFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.authUser, "auth-user", "", "embedded server: admit clients with this user name (and --auth-password)")
	fs.StringVar(&a.authPassword, "auth-password", "", "embedded server: the password of --auth-user")
	fs.StringVar(&a.authToken, "auth-token", "", "embedded server: admit clients with this token")
	fs.StringArrayVar(&a.authNKeys, "auth-nkey", nil, "embedded server: admit clients with this public user nkey (repeatable)")
	fs.StringVar(&a.authNKeySeed, "auth-nkey-seed", "", "embedded server: the agent's own nkey seed `file` (its public key is admitted)")
	fs.StringVar(&a.tlsListenCert, "tls-listen-cert", "", "embedded server: TLS certificate `file` (with --tls-listen-key); TLS becomes required")
	fs.StringVar(&a.tlsListenKey, "tls-listen-key", "", "embedded server: TLS key `file` of --tls-listen-cert")
	fs.StringVar(&a.tlsListenCA, "tls-listen-ca", "", "embedded server: CA `file` that client certificates must be signed by (required then)")
}

// clientSecurityOptions returns the connection options of the client
// flags that natsOptions does not handle.
func (a *app) clientSecurityOptions(cmd *cobra.Command) ([]nats.Option, error) {
	if a.nkeySeed == "" {
		return nil, nil
	}
	opt, err := nats.NkeyOptionFromSeed(a.nkeySeed)
	if err != nil {
		return nil, usagef(cmd, "--nkey-seed: %v", err)
	}
	return []nats.Option{opt}, nil
}

// checkCreds reads a NATS credentials file as nats.go will when it
// connects, so that a file that holds no user JWT or no user nkey seed is
// a usage error before anything connects, not an error of the connection
// (or, with no server up, no error at all).
func checkCreds(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if jwt, err := nkeys.ParseDecoratedJWT(data); err != nil || jwt == "" || !strings.HasPrefix(jwt, "eyJ") {
		return fmt.Errorf("%s holds no user JWT: want a credentials file (nsc generate creds)", path)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("%s holds no user nkey seed: want a credentials file (nsc generate creds)", path)
	}
	kp.Wipe()
	return nil
}

// securityConfig fills in cfg's authentication, TLS and policy from the
// flags, for serve. In external mode the embedded server's flags are
// usage errors; in embedded mode the agent's own connection gets
// credentials the server admits.
func (a *app) securityConfig(cmd *cobra.Command, cfg *serveConfig) error {
	fs := cmd.Flags()
	if err := a.policy.CheckMaxDuration(a.maxDuration); err != nil {
		return usagef(cmd, "config file %s: %v", a.configPath, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	cfg.Policy = a.policy
	if fs.Changed("nats-url") {
		for _, name := range serveSecurityFlags {
			if fs.Changed(name) {
				return usagef(cmd, "--%s configures the embedded server; it cannot be used with --nats-url (use --user, --password, --token, --creds, --nkey-seed and --tls-* for the external server)", name)
			}
		}
		return nil
	}
	auth := embedded.Auth{User: a.authUser, Password: a.authPassword, Token: a.authToken, NKeys: a.authNKeys}
	var agent []nats.Option
	switch {
	case a.authNKeySeed != "":
		seed, err := os.ReadFile(a.authNKeySeed)
		if err != nil {
			return usagef(cmd, "--auth-nkey-seed: %v", err)
		}
		kp, err := nkeys.ParseDecoratedNKey(seed)
		var pub string
		if err == nil {
			pub, err = kp.PublicKey()
			kp.Wipe()
		}
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return usagef(cmd, "--auth-nkey-seed: %s holds no user nkey seed", a.authNKeySeed)
		}
		if !slices.Contains(auth.NKeys, pub) {
			auth.NKeys = append(auth.NKeys, pub)
		}
		opt, err := nats.NkeyOptionFromSeed(a.authNKeySeed)
		if err != nil {
			return usagef(cmd, "--auth-nkey-seed: %v", err)
		}
		agent = append(agent, opt)
	case a.authUser != "":
		agent = append(agent, nats.UserInfo(a.authUser, a.authPassword))
	case a.authToken != "":
		agent = append(agent, nats.Token(a.authToken))
	case len(a.authNKeys) > 0:
		return usagef(cmd, "--auth-nkey needs --auth-nkey-seed (or --auth-user): the agent connects to its server too, and needs an identity the server admits")
	}
	cfg.Auth = auth
	cfg.TLS = embedded.TLS{CertFile: a.tlsListenCert, KeyFile: a.tlsListenKey, CAFile: a.tlsListenCA}
	cfg.AgentOptions = agent
	if err := (embedded.Config{DataDir: "-", Auth: cfg.Auth, TLS: cfg.TLS}).Validate(); err != nil {
		return usagef(cmd, "%s", flagNamesIn(err.Error()))
	}
	return checkTLSFiles(cmd, "--tls-listen-cert", "--tls-listen-key", "--tls-listen-ca", cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile)
}

// checkTLSFiles loads a certificate and key (if certFile is set) and a CA
// file (if caFile is set) as the NATS server or client will, so that a
// file that is missing or holds no PEM is a usage error naming its flag,
// before anything connects or starts.
func checkTLSFiles(cmd *cobra.Command, certFlag, keyFlag, caFlag, certFile, keyFile, caFile string) error {
	if certFile != "" {
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return usagef(cmd, "%s %s, %s %s: %v", certFlag, certFile, keyFlag, keyFile, err)
		}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return usagef(cmd, "%s: %v", caFlag, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return usagef(cmd, "%s: %s holds no PEM certificate", caFlag, caFile)
		}
	}
	return nil
}

// flagNamesIn rewrites the field names in an error of embedded.Config's
// Validate as the flags that set them.
func flagNamesIn(msg string) string {
	return strings.NewReplacer(
		"embedded: Config.", "",
		"Auth.User", "--auth-user", "Auth.Password", "--auth-password",
		"Auth.Token", "--auth-token", "Auth.NKeys", "--auth-nkey",
		"TLS.CertFile", "--tls-listen-cert", "TLS.KeyFile", "--tls-listen-key",
		"TLS.CAFile", "--tls-listen-ca",
		"\n", "; ",
	).Replace(msg)
}

// warnIfExposed logs a warning when the embedded server listens on an
// address other hosts may reach and admits anyone.
func warnIfExposed(logger *slog.Logger, cfg serveConfig) {
	if cfg.NATSURL != "" || cfg.Auth.Enabled() || cfg.TLS.CAFile != "" || isLoopback(cfg.Host) {
		return
	}
	logger.Warn("the embedded NATS server listens on a non-loopback address without authentication: "+
		"anyone who can reach it can claim and release any lease and forge events; "+
		"set --auth-user and --auth-password, --auth-token, --auth-nkey or --tls-listen-ca (see docs/security.md)",
		"listen", net.JoinHostPort(cfg.Host, fmt.Sprint(max(cfg.Port, 0))))
}

// isLoopback reports whether host names only the loopback interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isAuthError reports whether err is the NATS server refusing the
// credentials (at connect) or a subject they do not permit.
func isAuthError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrPermissionViolation) ||
		errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		return true
	}
	// nats.go reports a refused CONNECT as a new error with the server's
	// text, "nats: Authorization Violation".
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization violation") || strings.Contains(msg, "permissions violation")
}

// explainAuth adds to an error of the NATS server refusing credentials
// what to check.
func explainAuth(err error) error {
	if err == nil || !isAuthError(err) {
		return err
	}
	return fmt.Errorf("authorization failed: %w (check --user and --password, --token, --creds or --nkey-seed)", err)
}

// permissionWatch cancels a context when the connection reports that the
// server refused a publish or subscribe: a request on a subject the
// credentials may not publish to gets no reply, and would otherwise wait
// for its timeout.
type permissionWatch struct {
	cancel context.CancelCauseFunc
}

// option returns the nats option that reports refusals to w.
func (w *permissionWatch) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			w.cancel(fmt.Errorf("refused by the NATS server: %w (the credentials may not use these subjects)", err))
		}
	})
}

// refusal returns the refusal that ended ctx, if one did, in place of err.
func refusal(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, nats.ErrPermissionViolation) {
		return cause
	}
	return err
}

// agentNATSErrors hears what the NATS server tells the agent's own
// connection asynchronously, above all that it refused a publish or a
// subscription its credentials do not permit (docs/security.md, "The
// agent's own permissions"). The server drops a refused publish: a
// refused request gets no answer and would only time out, a refused
// reply or event is lost without a word. So during start-up a refusal
// fails the start at once, naming the subject; once the agent serves,
// each is logged as an error, at most every refusalLogEvery.
type agentNATSErrors struct {
	logger *slog.Logger

	mu        sync.Mutex
	failStart context.CancelCauseFunc // ends the start's context; nil once started
	failed    bool                    // the start failed on a refusal: nothing more to say
	lastLog   time.Time
	unlogged  int // refusals not logged since lastLog
}

// refusalLogEvery is how often, at most, the agent logs refusals once it
// serves: a refused event subject is refused for every event.
const refusalLogEvery = 10 * time.Second

// option returns the nats option that reports to e.
func (e *agentNATSErrors) option() nats.Option {
	return nats.ErrorHandler(e.handle)
}

func (e *agentNATSErrors) handle(_ *nats.Conn, sub *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		// A slow consumer, say: without a handler nats.go prints it.
		attrs := []any{"error", err}
		if sub != nil {
			attrs = append(attrs, "subject", sub.Subject)
		}
		e.logger.Warn("NATS connection error", attrs...)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.failed:
		return
	case e.failStart != nil:
		e.failStart(agentRefused(err))
		return
	}
	now := time.Now()
	if !e.lastLog.IsZero() && now.Sub(e.lastLog) < refusalLogEvery {
		e.unlogged++
		return
	}
	e.logger.Error("the NATS server refused the agent a subject its credentials do not permit; see docs/security.md (logged at most every "+refusalLogEvery.String()+")",
		"error", err, "unlogged", e.unlogged)
	e.lastLog, e.unlogged = now, 0
}

// started ends start-up, whose context is ctx: from now on refusals are
// logged. It returns the refusal of a subject during start-up, if there
// was one, in place of err: a refused request ends in a timeout whose
// error says nothing of why. The refusals of the subscriptions made
// before nc's last flush are known by then.
func (e *agentNATSErrors) started(ctx context.Context, nc *nats.Conn, err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failStart == nil {
		return err
	}
	refused := context.Cause(ctx)
	if refused == nil || !errors.Is(refused, nats.ErrPermissionViolation) {
		refused = nil
		if last := nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
			refused = agentRefused(last)
		}
	}
	e.failStart(nil)
	e.failStart = nil
	if refused != nil {
		e.failed = true
		return refused
	}
	return err
}

// agentRefused is the error of a start-up in which the NATS server
// refused the agent a subject.
func agentRefused(err error) error {
	return fmt.Errorf("refused by the NATS server: %w (the agent's credentials must permit the subjects docs/security.md lists under \"The agent's own permissions\")", err)
}
