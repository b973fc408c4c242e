package embedded

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/leaseagent/lease/internal/testcert"
)

// authLimit bounds how long a refused connection may take to be refused.
const authLimit = 5 * time.Second

func newUser(t *testing.T) (pub string, seedFile string, kp nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, seedFile, kp
}

func nkeyOption(t *testing.T, seedFile string) nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

func TestValidateSecurity(t *testing.T) {
	t.Parallel()
	pub, _, kp := newUser(t)
	seed, _ := kp.Seed()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // none: valid
	}{
		{"user and password", Config{Auth: Auth{User: "u", Password: "p"}}, nil},
		{"token", Config{Auth: Auth{Token: "t"}}, nil},
		{"nkeys and user", Config{Auth: Auth{User: "u", Password: "p", NKeys: []string{pub}}}, nil},
		{"tls", Config{TLS: TLS{CertFile: "c", KeyFile: "k", CAFile: "ca"}}, nil},
		{"password without user", Config{Auth: Auth{Password: "p"}}, []string{"Config.Auth.User: must be set with Auth.Password"}},
		{"user without password", Config{Auth: Auth{User: "u"}}, []string{"Config.Auth.Password: must not be empty"}},
		{"user with space", Config{Auth: Auth{User: "a b", Password: "p"}}, []string{"Config.Auth.User: must not contain white space"}},
		{"token and user", Config{Auth: Auth{Token: "t", User: "u", Password: "p"}}, []string{"Config.Auth.Token: cannot be combined"}},
		{"token and nkeys", Config{Auth: Auth{Token: "t", NKeys: []string{pub}}}, []string{"Config.Auth.Token: cannot be combined"}},
		{"bad nkey", Config{Auth: Auth{NKeys: []string{pub, "UNOTAKEY"}}}, []string{`Config.Auth.NKeys[1]: "UNOTAKEY" is not a public user nkey`}},
		{"seed as nkey", Config{Auth: Auth{NKeys: []string{string(seed)}}}, []string{"Config.Auth.NKeys[0]: is a seed"}},
		{"nkey twice", Config{Auth: Auth{NKeys: []string{pub, pub}}}, []string{"Config.Auth.NKeys[1]:", "listed twice"}},
		{"cert without key", Config{TLS: TLS{CertFile: "c"}}, []string{"Config.TLS.KeyFile: must be set with TLS.CertFile"}},
		{"key without cert", Config{TLS: TLS{KeyFile: "k"}}, []string{"Config.TLS.CertFile: must be set with TLS.KeyFile"}},
		{"ca without cert", Config{TLS: TLS{CAFile: "ca"}}, []string{"Config.TLS.CAFile: needs TLS.CertFile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DataDir = "d"
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), string(seed)) {
				t.Errorf("Validate() printed a seed: %q", err)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	pub, seedFile, _ := newUser(t)
	_, otherSeed, _ := newUser(t)
	for _, tc := range []struct {
		name string
		auth Auth
		good [][]nats.Option // each admitted, in-process and over TCP
		bad  [][]nats.Option // each refused over TCP
	}{
		{
			name: "user and password",
			auth: Auth{User: "agent", Password: "s3cret"},
			good: [][]nats.Option{{nats.UserInfo("agent", "s3cret")}},
			bad:  [][]nats.Option{nil, {nats.UserInfo("agent", "wrong")}, {nats.UserInfo("other", "s3cret")}, {nats.Token("s3cret")}},
		},
		{
			name: "token",
			auth: Auth{Token: "t0ken"},
			good: [][]nats.Option{{nats.Token("t0ken")}},
			bad:  [][]nats.Option{nil, {nats.Token("wrong")}, {nats.UserInfo("agent", "t0ken")}},
		},
		{
			name: "nkeys",
			auth: Auth{NKeys: []string{pub}},
			good: [][]nats.Option{{nkeyOption(t, seedFile)}},
			bad:  [][]nats.Option{nil, {nkeyOption(t, otherSeed)}},
		},
		{
			name: "nkeys and user",
			auth: Auth{User: "agent", Password: "s3cret", NKeys: []string{pub}},
			good: [][]nats.Option{{nkeyOption(t, seedFile)}, {nats.UserInfo("agent", "s3cret")}},
			bad:  [][]nats.Option{nil, {nkeyOption(t, otherSeed)}, {nats.UserInfo("agent", "wrong")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Start(Config{Port: RandomPort, DataDir: t.TempDir(), NoSync: true, Auth: tc.auth})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			for i, opts := range tc.good {
				nc, err := s.Connect(opts...)
				if err != nil {
					t.Fatalf("good credentials %d, in-process: %v", i, err)
				}
				// The connection may use JetStream.
				js, err := nc.JetStream()
				if err == nil {
					_, err = js.AccountInfo()
				}
				nc.Close()
				if err != nil {
					t.Errorf("good credentials %d, in-process: JetStream: %v", i, err)
				}
				nc, err = nats.Connect(s.ClientURL(), opts...)
				if err != nil {
					t.Fatalf("good credentials %d, TCP: %v", i, err)
				}
				nc.Close()
			}
			for i, opts := range tc.bad {
				begin := time.Now()
				nc, err := nats.Connect(s.ClientURL(), append(opts, nats.Timeout(authLimit))...)
				if err == nil {
					nc.Close()
					t.Fatalf("bad credentials %d: admitted", i)
				}
				if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					t.Errorf("bad credentials %d: %v, want an authorization violation", i, err)
				}
				if took := time.Since(begin); took > authLimit {
					t.Errorf("bad credentials %d: refused after %v", i, took)
				}
				// In-process connections are checked too, as quickly.
				begin = time.Now()
				nc, err = s.Connect(opts...)
				if err == nil {
					nc.Close()
					t.Fatalf("bad credentials %d: admitted in-process", i)
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("bad credentials %d, in-process: %v, want nats.ErrAuthorization", i, err)
				}
				if took := time.Since(begin); took > authLimit {
					t.Errorf("bad credentials %d: refused in-process after %v", i, took)
				}
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	files := testcert.Write(t)
	for _, tc := range []struct {
		name string
		tls  TLS
		good [][]nats.Option
		bad  [][]nats.Option
		want string // in every refusal
	}{
		{
			name: "server certificate",
			tls:  TLS{CertFile: files.ServerCert, KeyFile: files.ServerKey},
			good: [][]nats.Option{{nats.RootCAs(files.CA)}},
			bad:  [][]nats.Option{nil},
		},
		{
			name: "client certificates required",
			tls:  TLS{CertFile: files.ServerCert, KeyFile: files.ServerKey, CAFile: files.CA},
			good: [][]nats.Option{{nats.RootCAs(files.CA), nats.ClientCert(files.ClientCert, files.ClientKey)}},
			bad:  [][]nats.Option{nil, {nats.RootCAs(files.CA)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Start(Config{Port: RandomPort, DataDir: t.TempDir(), NoSync: true, TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			// In-process connections need no TLS.
			nc, err := s.Connect()
			if err != nil {
				t.Fatalf("in-process: %v", err)
			}
			nc.Close()
			for i, opts := range tc.good {
				nc, err := nats.Connect(s.ClientURL(), opts...)
				if err != nil {
					t.Fatalf("good %d: %v", i, err)
				}
				if !nc.TLSRequired() {
					t.Errorf("good %d: connected without TLS", i)
				}
				nc.Close()
			}
			for i, opts := range tc.bad {
				begin := time.Now()
				nc, err := nats.Connect(s.ClientURL(), append(opts, nats.Timeout(authLimit))...)
				if err == nil {
					nc.Close()
					t.Fatalf("bad %d: admitted", i)
				}
				if took := time.Since(begin); took > authLimit {
					t.Errorf("bad %d: refused after %v", i, took)
				}
			}
		})
	}
}

func TestTLSBadFiles(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	_, err := Start(Config{Port: RandomPort, DataDir: t.TempDir(), TLS: TLS{CertFile: missing, KeyFile: missing}})
	if err == nil || !strings.Contains(err.Error(), "embedded: Config.TLS:") || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("Start with a missing certificate = %v, want an error naming Config.TLS and the file", err)
	}
}
