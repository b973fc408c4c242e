package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/leaseagent/lease/embedded"
)

// parseServe reads the flags, environment and config file of serve as
// leaseagent does, and returns what serve would run, without running it.
func parseServe(t *testing.T, env map[string]string, args ...string) (serveConfig, error) {
	t.Helper()
	a := &app{stdout: io.Discard, stderr: io.Discard, lookupEnv: envMap(env)}
	cmd, _, err := newRootCommand(a).Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		return serveConfig{}, err
	}
	if err := a.bindEnv(cmd, nil); err != nil {
		return serveConfig{}, err
	}
	return a.serveConfig(cmd)
}

func TestClusterFlags(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	routes := []string{"nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"}
	file := writeFile(t, "cluster.toml", `
server_name    = "file-node"
cluster_name   = "file-cluster"
cluster_listen = "10.0.0.1:6222"
routes         = ["nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"]
replicas       = 3
`)
	for _, tc := range []struct {
		name         string
		env          map[string]string
		args         []string
		want         embedded.Cluster
		serverName   string
		startTimeout time.Duration
	}{
		{
			name:         "standalone",
			startTimeout: defaultTimeout,
		},
		{
			name:         "standalone with a server name and a start timeout",
			args:         []string{"--server-name", "solo", "--start-timeout", "30s"},
			serverName:   "solo",
			startTimeout: 30 * time.Second,
		},
		{
			name: "flags",
			args: []string{"--cluster-name", "c", "--cluster-listen", ":6222", "--routes", strings.Join(routes, ","), "--replicas", "3"},
			want: embedded.Cluster{Name: "c", Host: "0.0.0.0", Port: 6222, Routes: routes},
			// The server name defaults to the host name, the start
			// timeout to two minutes.
			serverName:   host,
			startTimeout: clusterStartTimeout,
		},
		{
			name: "repeated routes, host:port alone, credentials, random port",
			args: []string{"--cluster-name", "c", "--cluster-listen", "127.0.0.1:0", "--server-name", "n1",
				"--routes", "10.0.0.1:6222", "--routes", "nats-route://10.0.0.2:6222,nats://10.0.0.3:6222",
				"--cluster-user", "route", "--cluster-password", "pw", "--start-timeout", "5s", "--replicas", "3"},
			want: embedded.Cluster{Name: "c", Host: "127.0.0.1", Port: embedded.RandomPort,
				Routes: []string{"nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222", "nats://10.0.0.3:6222"},
				User:   "route", Password: "pw"},
			serverName:   "n1",
			startTimeout: 5 * time.Second,
		},
		{
			name:         "config file",
			args:         []string{"--config", file},
			want:         embedded.Cluster{Name: "file-cluster", Host: "10.0.0.1", Port: 6222, Routes: routes},
			serverName:   "file-node",
			startTimeout: clusterStartTimeout,
		},
		{
			name: "environment",
			env: map[string]string{
				"LEASEAGENT_CLUSTER_NAME": "env-cluster", "LEASEAGENT_CLUSTER_LISTEN": "10.0.0.2:7000",
				"LEASEAGENT_ROUTES": strings.Join(routes, ","), "LEASEAGENT_SERVER_NAME": "env-node",
			},
			want:         embedded.Cluster{Name: "env-cluster", Host: "10.0.0.2", Port: 7000, Routes: routes},
			serverName:   "env-node",
			startTimeout: clusterStartTimeout,
		},
		{
			name:         "a longer --timeout wins over the cluster's default start timeout",
			args:         []string{"--cluster-name", "c", "--cluster-listen", ":6222", "--routes", routes[0], "--server-name", "n", "--timeout", "5m"},
			want:         embedded.Cluster{Name: "c", Host: "0.0.0.0", Port: 6222, Routes: routes[:1]},
			serverName:   "n",
			startTimeout: 5 * time.Minute,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseServe(t, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("serve config: %v", err)
			}
			got := cfg.Cluster
			if got.Name != tc.want.Name || got.Host != tc.want.Host || got.Port != tc.want.Port ||
				!slices.Equal(got.Routes, tc.want.Routes) || got.User != tc.want.User || got.Password != tc.want.Password {
				t.Errorf("cluster %+v, want %+v", got, tc.want)
			}
			if cfg.ServerName != tc.serverName || cfg.StartTimeout != tc.startTimeout {
				t.Errorf("server name %q, start timeout %v; want %q, %v", cfg.ServerName, cfg.StartTimeout, tc.serverName, tc.startTimeout)
			}
		})
	}
}

func TestClusterUsageErrors(t *testing.T) {
	cluster := []string{"--cluster-name", "c", "--cluster-listen", "127.0.0.1:6222", "--routes", "nats-route://127.0.0.1:6222", "--server-name", "n"}
	with := func(args ...string) []string { return append(slices.Clone(cluster), args...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--cluster-name", "c", "--routes", "h:1"},
			"--cluster-name, --routes configure the embedded server; they cannot be used with --nats-url"},
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--server-name", "n"}, "--server-name configure the embedded server"},
		{[]string{"--cluster-name", "c"}, "a cluster needs --cluster-name, --cluster-listen and --routes; --cluster-listen and --routes missing"},
		{[]string{"--routes", "h:6222", "--cluster-listen", ":6222"}, "--cluster-name missing"},
		{[]string{"--replicas", "3"}, "--replicas 3 needs a NATS cluster"},
		{with("--cluster-listen", "127.0.0.1:70000"), `--cluster-listen: bad port "70000"`},
		{with("--cluster-listen", "nohost"), "--cluster-listen:"},
		{with("--routes", "http://h:6222"), `--routes[1]: "http://h:6222": want nats-route://host:port`},
		{with("--routes", "nats-route://h:0"), `--routes[1]: "nats-route://h:0": port "0"`},
		{with("--server-name", "my node"), `--server-name: must not contain white space`},
		{with("--cluster-name", "my cluster"), `--cluster-name: must not contain white space`},
		{with("--cluster-user", "u"), "--cluster-password: must not be empty when --cluster-user is set"},
		{with("--cluster-password", "p"), "--cluster-user: must be set with --cluster-password"},
		{with("--start-timeout", "-1s"), "--start-timeout must not be negative"},
		{[]string{"--server-name", "solo node"}, "--server-name: must not contain white space"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { requireUsageError(t, tc.want, tc.args...) })
	}
}

func TestWarnIfClusterExposed(t *testing.T) {
	for _, tc := range []struct {
		name string
		cl   embedded.Cluster
		warn bool
	}{
		{"standalone", embedded.Cluster{}, false},
		{"loopback", embedded.Cluster{Name: "c", Host: "127.0.0.1"}, false},
		{"every interface", embedded.Cluster{Name: "c", Host: "0.0.0.0"}, true},
		{"every interface with credentials", embedded.Cluster{Name: "c", Host: "0.0.0.0", User: "u", Password: "p"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			warnIfClusterExposed(slog.New(slog.NewTextHandler(&logs, nil)), serveConfig{Cluster: tc.cl})
			if got := strings.Contains(logs.String(), "level=WARN"); got != tc.warn {
				t.Errorf("warned: %v, want %v; logs %q", got, tc.warn, logs.String())
			}
		})
	}
}

// TestServeWaitsForTheCluster runs serve in this process as a node whose
// peers never come: it logs that it waits, gives up at --start-timeout,
// and stops at once if interrupted meanwhile.
func TestServeWaitsForTheCluster(t *testing.T) {
	t.Parallel()
	self, absent := freePort(t), freePort(t)
	cfg := serveConfig{
		Host: "127.0.0.1", Port: embedded.RandomPort,
		ServerName: "lonely",
		Cluster: embedded.Cluster{Name: "c", Host: "127.0.0.1", Port: self, Routes: []string{
			fmt.Sprintf("nats-route://127.0.0.1:%d", self), fmt.Sprintf("nats-route://127.0.0.1:%d", absent),
		}},
		Bucket: "leases", Replicas: 3, Prefix: "lease", MaxDuration: time.Hour,
	}
	t.Run("start timeout", func(t *testing.T) {
		cfg := cfg
		cfg.DataDir, cfg.StartTimeout = t.TempDir(), 1500*time.Millisecond
		var logs syncBuffer
		var stdout strings.Builder
		begin := time.Now()
		err := serve(context.Background(), cfg, &stdout, slog.New(slog.NewTextHandler(&logs, nil)))
		if err == nil || !strings.Contains(err.Error(), "the JetStream cluster did not form within 1.5s (--start-timeout)") {
			t.Errorf("serve = %v, want the cluster not formed within 1.5s", err)
		}
		if took := time.Since(begin); took > 1500*time.Millisecond+stopTimeout {
			t.Errorf("serve took %v", took)
		}
		if !strings.Contains(logs.String(), `msg="waiting for the JetStream cluster" cluster=c server=lonely`) {
			t.Errorf("no wait logged:\n%s", logs.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout = %q, want nothing", stdout.String())
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		cfg := cfg
		cfg.DataDir, cfg.StartTimeout = t.TempDir(), time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var logs syncBuffer
		begin := time.Now()
		if err := serve(ctx, cfg, io.Discard, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
			t.Errorf("serve = %v, want nil when stopped before serving", err)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("serve took %v to stop", took)
		}
		if !strings.Contains(logs.String(), "stopped before serving") {
			t.Errorf("logs lack \"stopped before serving\":\n%s", logs.String())
		}
	})
}

// In external mode serve retries an attempt to open the bucket only if it
// went unanswered: a server without JetStream fails it at once, with the
// server's reason, not after --start-timeout.
func TestServeExternalWithoutJetStreamFailsAtOnce(t *testing.T) {
	t.Parallel()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	cfg := serveConfig{
		NATSURL: ns.ClientURL(), StartTimeout: 20 * time.Second,
		Bucket: "leases", Replicas: 1, Prefix: "lease", MaxDuration: time.Hour,
	}
	var stdout strings.Builder
	err = serve(context.Background(), cfg, &stdout, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "jetstream") || strings.Contains(err.Error(), "within") {
		t.Fatalf("serve = %v, want the server's JetStream error, at once", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}

// Replicas are fixed when the bucket is created: an agent asked for more
// than an existing bucket has says so, since the bucket then survives
// fewer failures than the operator planned for.
func TestServeWarnsOfABucketWithFewerReplicasThanAsked(t *testing.T) {
	const warning = `the bucket has fewer replicas than --replicas`
	url, _ := serveInProcess(t, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()) // creates an R1 bucket
	for _, tc := range []struct {
		name     string
		replicas string
		warn     bool
	}{
		{"asked for as many", "1", false},
		{"asked for more", "3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, logs := serveInProcess(t, "--nats-url", url, "--agent-id", "r"+tc.replicas, "--replicas", tc.replicas)
			if got := strings.Contains(logs.String(), warning); got != tc.warn {
				t.Errorf("--replicas %s on an R1 bucket: warned %v, want %v; log:\n%s", tc.replicas, got, tc.warn, logs.String())
			}
		})
	}
}

// A node whose cluster does not form says, when it gives up, which other
// nodes its routes reached: none points at --routes, the network or the
// route credentials; some at the nodes missing.
func TestServeNamesTheNodesItReachedWhenTheClusterDoesNotForm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		peer bool // start a peer node, which keeps waiting for the third
		want string
	}{
		{"alone", false, "routes reach no other node"},
		{"with one of two peers", true, "routes reach 1 other node (peer)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			self, peer, absent := freePort(t), freePort(t), freePort(t)
			var routes []string
			for _, p := range []int{self, peer, absent} {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
			if tc.peer {
				srv, err := embedded.Start(embedded.Config{Name: "peer", Host: "127.0.0.1", Port: embedded.RandomPort, DataDir: t.TempDir(),
					Cluster: embedded.Cluster{Name: "c", Host: "127.0.0.1", Port: peer, Routes: routes}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(srv.Shutdown)
			}
			cfg := serveConfig{
				Host: "127.0.0.1", Port: embedded.RandomPort, DataDir: t.TempDir(), StartTimeout: 3 * time.Second,
				ServerName: "lonely",
				Cluster:    embedded.Cluster{Name: "c", Host: "127.0.0.1", Port: self, Routes: routes},
				Bucket:     "leases", Replicas: 3, Prefix: "lease", MaxDuration: time.Hour,
			}
			var logs syncBuffer
			err := serve(context.Background(), cfg, io.Discard, slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("serve = %v, want an error saying %q; log:\n%s", err, tc.want, logs.String())
			}
		})
	}
}
