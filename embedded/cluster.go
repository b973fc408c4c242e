package embedded

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultClusterPort is the route port used when [Cluster.Port] is 0 and
// clustering is on: the standard NATS cluster port.
const DefaultClusterPort = 6222

// Cluster joins the server to a NATS cluster with JetStream clustering, so
// that streams and key-value buckets can be replicated over several
// servers (Replicas up to the number of servers). The zero value means no
// cluster: the server runs standalone.
//
// Every server of the cluster needs the same Name, a [Config.Name] of its
// own that it keeps across restarts (JetStream knows its peers by server
// name), and Routes to the others. Give every server the same full list
// of routes, its own included: a route to itself is recognised and
// ignored, and JetStream sizes the cluster from the list when it forms for
// the first time.
//
// Routes are plain TCP. Without User and Password anyone who can reach
// the route port can join the cluster and read or write every stream: put
// it on a private network.
type Cluster struct {
	// Name is the cluster's name, the same on every server. Required when
	// any other field is set; it must not contain white space.
	Name string

	// Host is the address the route listener binds to. Default: the
	// client listener's [Config.Host].
	Host string

	// Port is the route port. 0 means 6222 ([DefaultClusterPort]); -1
	// ([RandomPort]) means a random free port, which is what tests want
	// (read it back with [Server.ClusterURL]).
	Port int

	// Routes are the URLs of the cluster's servers, such as
	// "nats-route://10.0.0.1:6222" (the scheme "nats" is accepted too). At
	// least one is required. Credentials in a URL win over User and
	// Password.
	Routes []string

	// User and Password, if set, are required from every server that
	// connects a route to this one, and presented to the servers in
	// Routes. Set the same pair on every server of the cluster.
	User, Password string
}

// Enabled reports whether any field is set, which turns clustering on.
func (c Cluster) Enabled() bool {
	return c.Name != "" || c.Host != "" || c.Port != 0 || len(c.Routes) > 0 || c.User != "" || c.Password != ""
}

// validateCluster reports the invalid fields of c.Cluster through bad.
func (c Config) validateCluster(bad func(field, format string, args ...any)) {
	cl := c.Cluster
	if !cl.Enabled() {
		return
	}
	switch {
	case cl.Name == "":
		bad("Cluster.Name", "must be set to cluster (the same name on every server)")
	case strings.IndexFunc(cl.Name, unicode.IsSpace) >= 0:
		bad("Cluster.Name", "must not contain white space, got %q", cl.Name)
	}
	if c.Name == "" {
		bad("Name", "must be set when clustering: JetStream knows servers by name, which must be unique in the cluster and kept across restarts")
	}
	if cl.Port < RandomPort || cl.Port > 65535 {
		bad("Cluster.Port", "must be -1 (random), 0 (default %d) or 1..65535, got %d", DefaultClusterPort, cl.Port)
	}
	if len(cl.Routes) == 0 {
		bad("Cluster.Routes", "must list at least one route, such as nats-route://host:%d (best: every server of the cluster, this one included)", DefaultClusterPort)
	}
	for i, r := range cl.Routes {
		if _, err := parseRoute(r); err != nil {
			bad(fmt.Sprintf("Cluster.Routes[%d]", i), "%v", err)
		}
	}
	switch {
	case cl.User == "" && cl.Password != "":
		bad("Cluster.User", "must be set with Cluster.Password")
	case cl.User != "" && cl.Password == "":
		bad("Cluster.Password", "must not be empty when Cluster.User is set")
	}
	if strings.ContainsAny(cl.User, ":@/ \t\n") {
		bad("Cluster.User", "must not contain ':', '@', '/' or white space, got %q", cl.User)
	}
	if c.DontListen {
		bad("DontListen", "cannot be combined with Cluster: nats-server opens its routes only once the client listener is up")
	}
}

// parseRoute parses a route URL: nats-route://[user:password@]host:port.
func parseRoute(route string) (*url.URL, error) {
	u, err := url.Parse(route)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: want nats-route://host:port", route)
	}
	if u.Scheme != "nats-route" && u.Scheme != "nats" {
		return nil, fmt.Errorf("%q: want nats-route://host:port", route)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return nil, fmt.Errorf("%q: want nats-route://host:port, with host and port", route)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("%q: port %q is not in 1..65535", route, port)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: want nats-route://host:port, with no path or query", route)
	}
	return u, nil
}

// clusterWithDefaults returns cl with defaults filled in; host is the
// client listener's host.
func clusterWithDefaults(cl Cluster, host string) Cluster {
	if !cl.Enabled() {
		return cl
	}
	if cl.Host == "" {
		cl.Host = host
	}
	if cl.Port == 0 {
		cl.Port = DefaultClusterPort
	}
	return cl
}

// applyCluster sets the cluster options of the server. c is validated and
// has its defaults.
func (c Config) applyCluster(opts *server.Options) error {
	cl := c.Cluster
	if !cl.Enabled() {
		return nil
	}
	port := cl.Port
	if port == RandomPort {
		port = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{
		Name:     cl.Name,
		Host:     cl.Host,
		Port:     port,
		Username: cl.User,
		Password: cl.Password,
	}
	for _, r := range cl.Routes {
		u, err := parseRoute(r)
		if err != nil {
			return fmt.Errorf("embedded: Config.Cluster.Routes: %w", err)
		}
		if u.User == nil && cl.User != "" {
			u.User = url.UserPassword(cl.User, cl.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// ClusterURL returns the URL other servers reach this one's routes at,
// nats-route://host:port, with the actual port (also for [RandomPort]); a
// route listener on all interfaces is given as the loopback address. It
// returns "" when the server is not clustered.
func (s *Server) ClusterURL() string { return s.clusterURL }

// ClusterAddr returns the host:port the route listener is bound to, or ""
// when the server is not clustered.
func (s *Server) ClusterAddr() string { return s.clusterAddr }

// Name returns the server's name ([Config.Name] or its default).
func (s *Server) Name() string { return s.cfg.Name }
