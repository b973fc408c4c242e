package chaos

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/natskv"
)

// Cluster is several `leaseagent` processes in clustered embedded mode:
// each runs its own NATS node, the nodes form one NATS cluster, and the
// agents share one bucket with a replica on every node. Node i's server
// and agent are both named "node-<i>".
type Cluster struct {
	Nodes []*Agent
	// OwnershipDuration is the agents' --ownership-duration.
	OwnershipDuration time.Duration

	observer *nats.Conn // to any node: finds owners and the stream leader
}

// ClusterConfig says how to start a Cluster.
type ClusterConfig struct {
	Bin string
	// Dir holds each node's data directory and log.
	Dir string
	// Nodes is how many nodes; 3 if zero. The bucket has a replica on
	// each.
	Nodes int
	// OwnershipDuration is the agents' --ownership-duration; 2s if zero.
	OwnershipDuration time.Duration
	// Env is the agents' environment.
	Env []string
}

// StartCluster starts every node at once (each waits for the others to
// form the JetStream cluster) and returns when all serve.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.OwnershipDuration == 0 {
		cfg.OwnershipDuration = 2 * time.Second
	}
	clientAddrs, err := freeAddrs(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	routeAddrs, err := freeAddrs(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	var routes []string
	for _, a := range routeAddrs {
		routes = append(routes, "nats-route://"+a)
	}
	c := &Cluster{OwnershipDuration: cfg.OwnershipDuration}
	for i := range cfg.Nodes {
		name := fmt.Sprintf("node-%d", i)
		a, err := newAgent(cfg.Bin, filepath.Join(cfg.Dir, name), filepath.Join(cfg.Dir, name+".log"), cfg.Env,
			"--server-name", name,
			"--cluster-name", "chaos",
			"--cluster-listen", routeAddrs[i],
			"--routes", strings.Join(routes, ","),
			"--replicas", fmt.Sprint(cfg.Nodes),
			"--ownership-duration", cfg.OwnershipDuration.String(),
		)
		if err != nil {
			c.Close()
			return nil, err
		}
		a.addr = clientAddrs[i]
		c.Nodes = append(c.Nodes, a)
	}
	errs := make([]error, cfg.Nodes)
	var wg sync.WaitGroup
	for i, a := range c.Nodes {
		wg.Go(func() {
			if err := a.start(); err != nil {
				errs[i] = fmt.Errorf("node-%d: %w", i, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	if c.observer, err = nats.Connect(strings.Join(c.URLs(), ","), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// freeAddrs returns n distinct addresses of 127.0.0.1 that nothing listened
// on a moment ago.
func freeAddrs(n int) ([]string, error) {
	seen := map[string]bool{}
	var addrs []string
	for len(addrs) < n {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// URLs returns the client URL of every node, in order.
func (c *Cluster) URLs() []string {
	var urls []string
	for _, a := range c.Nodes {
		urls = append(urls, "nats://"+a.Addr())
	}
	return urls
}

// nodeIndex returns the index of the node named name ("node-<i>").
func (c *Cluster) nodeIndex(name string) (int, error) {
	for i := range c.Nodes {
		if name == fmt.Sprintf("node-%d", i) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no node is named %q", name)
}

// Owner returns the index of the node whose agent owns namespace ns, as the
// bucket says now.
func (c *Cluster) Owner(ctx context.Context, ns string) (int, error) {
	id, err := OwnerID(ctx, c.observer, ns)
	if err != nil {
		return 0, err
	}
	return c.nodeIndex(id)
}

// OwnerID returns the ID of the agent that owns namespace ns of the default
// bucket, as the bucket says now, read through nc.
func OwnerID(ctx context.Context, nc *nats.Conn, ns string) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	b, err := natskv.OpenBucket(ctx, natskv.BucketConfig{JetStream: js})
	if err != nil {
		return "", err
	}
	owners, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: agent.OwnersNamespace})
	if err != nil {
		return "", err
	}
	if err := owners.RefreshContext(ctx); err != nil {
		return "", err
	}
	holder, _, ok := owners.Holder(ns)
	if !ok {
		return "", fmt.Errorf("nobody owns namespace %q", ns)
	}
	return holder, nil
}

// StreamLeader returns the index of the node that leads the bucket's
// stream.
func (c *Cluster) StreamLeader(ctx context.Context) (int, error) {
	js, err := jetstream.New(c.observer)
	if err != nil {
		return 0, err
	}
	s, err := js.Stream(ctx, "KV_"+natskv.DefaultBucket)
	if err != nil {
		return 0, err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return 0, errors.New("the bucket's stream has no leader")
	}
	return c.nodeIndex(info.Cluster.Leader)
}

// Each runs f on every node at once and joins their errors.
func (c *Cluster) Each(f func(i int, a *Agent) error) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, a := range c.Nodes {
		wg.Go(func() {
			if err := f(i, a); err != nil {
				errs[i] = fmt.Errorf("node-%d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// LogTail returns the last n lines of every node's log.
func (c *Cluster) LogTail(n int) string {
	var b strings.Builder
	for i, a := range c.Nodes {
		fmt.Fprintf(&b, "--- node-%d:\n%s\n", i, a.LogTail(n))
	}
	return b.String()
}

// Close kills every node.
func (c *Cluster) Close() {
	if c.observer != nil {
		c.observer.Close()
	}
	for _, a := range c.Nodes {
		a.Close()
	}
}
