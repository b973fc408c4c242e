package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// clusterFormLimit bounds how long a test waits for a JetStream cluster to
// form (routes connected, meta leader elected, every server current).
const clusterFormLimit = 10 * time.Second

// freeTCPPort returns a port on 127.0.0.1 that nothing listened on a moment
// ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// startCluster starts n clustered servers on 127.0.0.1, each with the full
// list of routes, and shuts them down when the test ends. Route ports are
// picked before the servers start, since every server must know them all;
// should one be taken in the meantime, the whole cluster is started again.
// edit, if not nil, changes server i's config.
func startCluster(t *testing.T, n int, edit func(i int, cfg *Config)) []*Server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := make([]int, n)
		routes := make([]string, n)
		for i := range ports {
			ports[i] = freeTCPPort(t)
			routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
		}
		servers := make([]*Server, 0, n)
		var err error
		for i := range n {
			cfg := testConfig(t)
			cfg.Name = fmt.Sprintf("node-%d", i)
			cfg.Cluster = Cluster{Name: "test-cluster", Port: ports[i], Routes: routes}
			if edit != nil {
				edit(i, &cfg)
			}
			var s *Server
			if s, err = Start(cfg); err != nil {
				break
			}
			servers = append(servers, s)
		}
		if err == nil {
			for _, s := range servers {
				t.Cleanup(s.Shutdown)
			}
			return servers
		}
		for _, s := range servers {
			s.Shutdown()
		}
		if attempt < 3 && errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		t.Fatalf("Start: %v", err)
	}
}

// waitClusterFormed polls until every server is clustered and current
// with the JetStream meta group, and one of them is the meta leader and
// sees every server as an online peer. (nats-server has no event for it.)
func waitClusterFormed(t *testing.T, servers []*Server) {
	t.Helper()
	deadline := time.Now().Add(clusterFormLimit)
	for {
		formed, leaders := true, 0
		var state []string
		for _, s := range servers {
			ns := s.NATSServer()
			clustered, current := ns.JetStreamIsClustered(), ns.JetStreamIsCurrent()
			formed = formed && clustered && current
			line := fmt.Sprintf("%s: clustered=%v current=%v routes=%d", s.Name(), clustered, current, ns.NumRoutes())
			if ns.JetStreamIsLeader() {
				leaders++
				peers := len(ns.JetStreamClusterPeers()) // known only to the leader
				formed = formed && peers == len(servers)
				line += fmt.Sprintf(" leader, %d peers online", peers)
			}
			state = append(state, line)
		}
		if formed && leaders == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not formed within %v (%d meta leaders):\n%s",
				clusterFormLimit, leaders, strings.Join(state, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterReplicatedKeyValue(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, 3, func(_ int, cfg *Config) {
		cfg.Cluster.User, cfg.Cluster.Password = "route", "s3cret"
	})
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s.ClusterAddr())
		if err != nil || host != DefaultHost || port == "0" {
			t.Errorf("%s: ClusterAddr() = %q, want %s:PORT", s.Name(), s.ClusterAddr(), DefaultHost)
		}
		if want := "nats-route://" + s.ClusterAddr(); s.ClusterURL() != want {
			t.Errorf("%s: ClusterURL() = %q, want %q", s.Name(), s.ClusterURL(), want)
		}
	}
	waitClusterFormed(t, servers)

	ctx := testContext(t)
	js0, err := jetstream.New(dialInProcess(t, servers[0]))
	if err != nil {
		t.Fatal(err)
	}
	kv0, err := js0.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases", Replicas: 3})
	if err != nil {
		t.Fatalf("create an R3 bucket: %v", err)
	}
	// Reads through another server must come from the stream leader, not
	// from whichever replica is nearest: turn direct get off.
	stream, err := js0.Stream(ctx, "KV_leases")
	if err != nil {
		t.Fatal(err)
	}
	sc := stream.CachedInfo().Config
	sc.AllowDirect = false
	if _, err := js0.UpdateStream(ctx, sc); err != nil {
		t.Fatalf("turn direct get off: %v", err)
	}
	rev, err := kv0.Create(ctx, "mysql", []byte("unit/0"))
	if err != nil {
		t.Fatalf("create a key through %s: %v", servers[0].Name(), err)
	}

	js2, err := jetstream.New(dialTCP(t, servers[2]))
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := js2.KeyValue(ctx, "leases")
	if err != nil {
		t.Fatalf("bind the bucket through %s: %v", servers[2].Name(), err)
	}
	e, err := kv2.Get(ctx, "mysql")
	if err != nil {
		t.Fatalf("get through %s: %v", servers[2].Name(), err)
	}
	if string(e.Value()) != "unit/0" || e.Revision() != rev {
		t.Errorf("get through %s = %q at revision %d, want %q at %d", servers[2].Name(), e.Value(), e.Revision(), "unit/0", rev)
	}

	// Every replica catches up: the leader and two current followers.
	deadline := time.Now().Add(clusterFormLimit)
	for {
		info, err := js2.Stream(ctx, "KV_leases")
		if err != nil {
			t.Fatal(err)
		}
		ci := info.CachedInfo()
		current := 0
		for _, p := range ci.Cluster.Replicas {
			if p.Current {
				current++
			}
		}
		if ci.Config.Replicas == 3 && ci.Cluster.Leader != "" && len(ci.Cluster.Replicas) == 2 && current == 2 &&
			ci.State.LastSeq == rev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream KV_leases: replicas %d, leader %q, %d followers (%d current), last sequence %d; want 3, a leader, 2 current, %d",
				ci.Config.Replicas, ci.Cluster.Leader, len(ci.Cluster.Replicas), current, ci.State.LastSeq, rev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterRouteAuth checks that a server presenting the wrong route
// password is refused, and says so in the log.
func TestClusterRouteAuth(t *testing.T) {
	t.Parallel()
	logs := make([]*syncBuffer, 2)
	servers := startCluster(t, 2, func(i int, cfg *Config) {
		logs[i] = &syncBuffer{}
		cfg.Logger = slog.New(slog.NewTextHandler(logs[i], nil))
		cfg.Cluster.User, cfg.Cluster.Password = "route", "password-"+strconv.Itoa(i)
	})
	deadline := time.Now().Add(clusterFormLimit)
	for !strings.Contains(strings.ToLower(logs[0].String()+logs[1].String()), "authorization violation") {
		if time.Now().After(deadline) {
			t.Fatalf("no authorization violation logged within %v:\n%s\n%s", clusterFormLimit, logs[0], logs[1])
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range servers {
		if n := s.NATSServer().NumRoutes(); n != 0 {
			t.Errorf("%s has %d routes, want 0", s.Name(), n)
		}
	}
}

func TestClusterPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().String()

	cfg := testConfig(t)
	cfg.Name = "busy"
	cfg.Cluster = Cluster{Name: "c", Port: l.Addr().(*net.TCPAddr).Port, Routes: []string{"nats-route://" + addr}}
	s, err := Start(cfg)
	if err == nil {
		s.Shutdown()
		t.Fatalf("Start with the route port %s taken succeeded", addr)
	}
	if !strings.Contains(err.Error(), addr) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q does not name %s and wrap EADDRINUSE", err, addr)
	}
}

func TestValidateCluster(t *testing.T) {
	t.Parallel()
	ok := Cluster{Name: "c", Routes: []string{"nats-route://10.0.0.1:6222", "nats://h2:6222"}}
	with := func(edit func(*Config)) Config {
		cfg := Config{Name: "node-1", DataDir: "d", Cluster: ok}
		edit(&cfg)
		return cfg
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"valid", with(func(*Config) {}), nil},
		{"random port and auth", with(func(c *Config) {
			c.Cluster.Port, c.Cluster.User, c.Cluster.Password = RandomPort, "u", "p"
		}), nil},
		{"credentials in a route", with(func(c *Config) { c.Cluster.Routes = []string{"nats-route://u:p@h:6222"} }), nil},
		{"no cluster name", with(func(c *Config) { c.Cluster.Name = "" }), []string{"Config.Cluster.Name: must be set"}},
		{"space in cluster name", with(func(c *Config) { c.Cluster.Name = "my cluster" }), []string{"Config.Cluster.Name:", `"my cluster"`}},
		{"no server name", with(func(c *Config) { c.Name = "" }), []string{"Config.Name: must be set when clustering"}},
		{"port out of range", with(func(c *Config) { c.Cluster.Port = 70000 }), []string{"Config.Cluster.Port:", "70000"}},
		{"negative port", with(func(c *Config) { c.Cluster.Port = -2 }), []string{"Config.Cluster.Port:", "-2"}},
		{"no routes", with(func(c *Config) { c.Cluster.Routes = nil }), []string{"Config.Cluster.Routes: must list at least one route"}},
		{"route not a URL", with(func(c *Config) { c.Cluster.Routes = []string{"nats-route://h:6222", "::"} }), []string{"Config.Cluster.Routes[1]:", `"::"`}},
		{"route without scheme", with(func(c *Config) { c.Cluster.Routes = []string{"h:6222"} }), []string{"Config.Cluster.Routes[0]:", "nats-route://host:port"}},
		{"route with another scheme", with(func(c *Config) { c.Cluster.Routes = []string{"http://h:6222"} }), []string{"Config.Cluster.Routes[0]:", `"http://h:6222"`}},
		{"route without port", with(func(c *Config) { c.Cluster.Routes = []string{"nats-route://h"} }), []string{"Config.Cluster.Routes[0]:", "host and port"}},
		{"route with bad port", with(func(c *Config) { c.Cluster.Routes = []string{"nats-route://h:0"} }), []string{"Config.Cluster.Routes[0]:", `port "0"`}},
		{"route with a path", with(func(c *Config) { c.Cluster.Routes = []string{"nats-route://h:6222/x"} }), []string{"Config.Cluster.Routes[0]:", "no path"}},
		{"password without user", with(func(c *Config) { c.Cluster.Password = "p" }), []string{"Config.Cluster.User: must be set with Cluster.Password"}},
		{"user without password", with(func(c *Config) { c.Cluster.User = "u" }), []string{"Config.Cluster.Password:"}},
		{"colon in user", with(func(c *Config) { c.Cluster.User, c.Cluster.Password = "u:v", "p" }), []string{"Config.Cluster.User:", `"u:v"`}},
		{"DontListen", with(func(c *Config) { c.DontListen = true }), []string{"Config.DontListen: cannot be combined with Cluster"}},
		{"routes alone turn clustering on", Config{DataDir: "d", Cluster: Cluster{Routes: ok.Routes}},
			[]string{"Config.Cluster.Name:", "Config.Name:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkValidate(t, tt.cfg, tt.want)
		})
	}
}

func TestClusterDefaults(t *testing.T) {
	t.Parallel()
	got := Config{Name: "n", Host: "10.0.0.1", DataDir: "d", Cluster: Cluster{Name: "c", Routes: []string{"nats-route://h:1"}}}.withDefaults()
	if got.Cluster.Host != "10.0.0.1" || got.Cluster.Port != DefaultClusterPort {
		t.Errorf("cluster listens on %s:%d, want 10.0.0.1:%d", got.Cluster.Host, got.Cluster.Port, DefaultClusterPort)
	}
	if got := (Config{DataDir: "d"}).withDefaults().Cluster; got.Enabled() {
		t.Errorf("withDefaults() turned clustering on: %+v", got)
	}
}
