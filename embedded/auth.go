package embedded

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Auth says how clients must authenticate to the server. The zero value
// lets every client in. Connections made with [Server.Connect] are
// clients too: pass them matching credentials as nats options
// (nats.UserInfo, nats.Token, nats.Nkey or nats.NkeyOptionFromSeed).
//
// Every authenticated client has full rights (publish and subscribe on any
// subject). For per-user subject permissions run an external nats-server
// and point leaseagent at it.
type Auth struct {
	// User and Password, if set, admit a client that presents both.
	User, Password string

	// Token, if set, admits a client that presents it. It cannot be
	// combined with User or NKeys: nats-server allows a token or users,
	// not both.
	Token string

	// NKeys are the public user nkeys (starting with 'U') of the clients
	// admitted by signing the server's challenge with their seed. They may
	// be combined with User and Password.
	NKeys []string
}

// Enabled reports whether a method of authentication is set.
func (a Auth) Enabled() bool {
	return a.User != "" || a.Password != "" || a.Token != "" || len(a.NKeys) > 0
}

// TLS says how the server's client port uses TLS. The zero value means
// plain TCP. Connections made with [Server.Connect] do not use TLS: they
// never leave the process.
type TLS struct {
	// CertFile and KeyFile are the server's certificate (chain) and
	// private key, PEM-encoded. Setting them makes TLS required: clients
	// that do not speak TLS are refused.
	CertFile, KeyFile string

	// CAFile, if set, holds the PEM certificates of the authorities that
	// sign client certificates; clients must then present a certificate
	// that one of them signed. It requires CertFile and KeyFile.
	CAFile string
}

// Enabled reports whether TLS is on.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// validateSecurity reports the invalid fields of c.Auth and c.TLS through
// bad.
func (c Config) validateSecurity(bad func(field, format string, args ...any)) {
	a := c.Auth
	switch {
	case a.User == "" && a.Password != "":
		bad("Auth.User", "must be set with Auth.Password")
	case a.User != "" && a.Password == "":
		bad("Auth.Password", "must not be empty when Auth.User is set")
	}
	if strings.IndexFunc(a.User, unicode.IsSpace) >= 0 {
		bad("Auth.User", "must not contain white space, got %q", a.User)
	}
	if a.Token != "" && (a.User != "" || len(a.NKeys) > 0) {
		bad("Auth.Token", "cannot be combined with Auth.User or Auth.NKeys: nats-server takes a token or users, not both")
	}
	seen := make(map[string]bool, len(a.NKeys))
	for i, k := range a.NKeys {
		switch {
		case strings.HasPrefix(k, "S"):
			// Never echo what looks like a seed.
			bad(fmt.Sprintf("Auth.NKeys[%d]", i), "is a seed, a secret: want the public user key (starting with U)")
		case !nkeys.IsValidPublicUserKey(k):
			bad(fmt.Sprintf("Auth.NKeys[%d]", i), "%q is not a public user nkey (56 characters starting with U)", k)
		case seen[k]:
			bad(fmt.Sprintf("Auth.NKeys[%d]", i), "%q is listed twice", k)
		}
		seen[k] = true
	}
	t := c.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		bad("TLS.KeyFile", "must be set with TLS.CertFile")
	case t.CertFile == "" && t.KeyFile != "":
		bad("TLS.CertFile", "must be set with TLS.KeyFile")
	case t.CAFile != "" && t.CertFile == "":
		bad("TLS.CAFile", "needs TLS.CertFile and TLS.KeyFile: client certificates are checked only over TLS")
	}
}

// applySecurity sets the authentication and TLS options of the server.
func (c Config) applySecurity(opts *server.Options) error {
	a := c.Auth
	switch {
	case len(a.NKeys) > 0:
		// With nkeys, nats-server reads users only from Users.
		for _, k := range a.NKeys {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
		}
		if a.User != "" {
			opts.Users = []*server.User{{Username: a.User, Password: a.Password}}
		}
	case a.User != "":
		opts.Username, opts.Password = a.User, a.Password
	case a.Token != "":
		opts.Authorization = a.Token
	}
	t := c.TLS
	if t.CertFile == "" {
		return nil
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: t.CertFile,
		KeyFile:  t.KeyFile,
		CaFile:   t.CAFile,
		Verify:   t.CAFile != "",
	})
	if err != nil {
		return fmt.Errorf("embedded: Config.TLS: %w", err)
	}
	opts.TLSConfig = tc
	opts.TLSVerify = t.CAFile != ""
	return nil
}

// checkCredentials reports, before connecting, whether the credentials in
// opts are ones the server admits. A refused in-process connection would
// otherwise take the server's write deadline (10s) to fail: the server and
// the client block on each other's writes over the in-memory pipe.
func (s *Server) checkCredentials(opts []nats.Option) error {
	a := s.cfg.Auth
	if !a.Enabled() {
		return nil
	}
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return err
		}
	}
	switch {
	case a.User != "" && o.User == a.User && o.Password == a.Password:
		return nil
	case a.Token != "" && o.Token == a.Token:
		return nil
	case o.Nkey != "" && slices.Contains(a.NKeys, o.Nkey):
		return nil
	}
	return fmt.Errorf("%w: the credentials given match none that Config.Auth admits", nats.ErrAuthorization)
}
