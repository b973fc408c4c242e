package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/leaseagent/lease/bench/stats"
)

// peer is another lease service run the way its users would use it for
// leases, on this machine, in the same run.
type peer interface {
	cycles(d time.Duration, n int) (stats.Result, error)
	extends(d time.Duration, n int) (stats.Result, error)
	checks(d time.Duration, n int) (stats.Result, error)
	fillList(size int) error
	list(d time.Duration, n, size int) (stats.Result, error)
	stop()
}

// freePort returns a loopback port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a peer's server process, its output in a log file in its
// directory, which stop removes.
type process struct {
	cmd *exec.Cmd
	dir string
}

func startProcess(dir, name string, args ...string) (*process, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	return &process{cmd: cmd, dir: dir}, nil
}

func (p *process) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for p.cmd.ProcessState == nil {
			if err := p.cmd.Process.Signal(syscall.Signal(0)); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
	}
	_ = os.RemoveAll(p.dir)
}

// ---- etcd ----

type etcdPeer struct {
	proc    *process
	url     string
	clients []*clientv3.Client
	held    map[int][]clientv3.LeaseID // by number of clients: one held lease per client
}

// startEtcd runs a one-member etcd with its default durability (fsync of
// its WAL before each commit is acknowledged).
func startEtcd(parent string) (*etcdPeer, error) {
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, errNotInstalled
	}
	dir, err := os.MkdirTemp(parent, "leasebench-etcd-")
	if err != nil {
		return nil, err
	}
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	curl := "http://127.0.0.1:" + strconv.Itoa(cport)
	purl := "http://127.0.0.1:" + strconv.Itoa(pport)
	proc, err := startProcess(dir, "etcd",
		"--name", "bench", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "bench="+purl, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	p := &etcdPeer{proc: proc, url: curl, held: map[int][]clientv3.LeaseID{}}
	c, err := p.client()
	if err != nil {
		p.stop()
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.Put(ctx, "/ready", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("etcd did not start (log in %s): %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, nil
}

func (p *etcdPeer) client() (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{p.url},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	p.clients = append(p.clients, c)
	return c, nil
}

// clientsN returns n clients, each on its own connection.
func (p *etcdPeer) clientsN(n int) ([]*clientv3.Client, error) {
	for len(p.clients) < n {
		if _, err := p.client(); err != nil {
			return nil, err
		}
	}
	return p.clients[:n], nil
}

func (p *etcdPeer) stop() {
	for _, c := range p.clients {
		_ = c.Close()
	}
	p.proc.stop()
}

// claim grants a lease and puts the key with it if the key does not exist:
// how etcd's own concurrency package takes a lock or an election.
func etcdClaim(ctx context.Context, c *clientv3.Client, key, holder string, ttl int64) (clientv3.LeaseID, error) {
	g, err := c.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	r, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, holder, clientv3.WithLease(g.ID))).
		Commit()
	if err != nil {
		return 0, err
	}
	if !r.Succeeded {
		_, _ = c.Revoke(ctx, g.ID)
		return 0, fmt.Errorf("etcd: %s already held", key)
	}
	return g.ID, nil
}

func (p *etcdPeer) cycles(d time.Duration, n int) (stats.Result, error) {
	cs, err := p.clientsN(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, i int) error {
		id, err := etcdClaim(ctx, cs[g], fmt.Sprintf("/cycles/c%d-%d-%d", n, g, i), "h", 60)
		if err != nil {
			return err
		}
		_, err = cs[g].Revoke(ctx, id)
		return err
	}), nil
}

func (p *etcdPeer) holdOne(n int) ([]*clientv3.Client, []clientv3.LeaseID, error) {
	cs, err := p.clientsN(n)
	if err != nil {
		return nil, nil, err
	}
	if ids, ok := p.held[n]; ok {
		return cs, ids, nil
	}
	ids := make([]clientv3.LeaseID, n)
	for g := range n {
		if ids[g], err = etcdClaim(context.Background(), cs[g], fmt.Sprintf("/held/e%d-%d", n, g), "h", 3600); err != nil {
			return nil, nil, err
		}
	}
	p.held[n] = ids
	return cs, ids, nil
}

func (p *etcdPeer) extends(d time.Duration, n int) (stats.Result, error) {
	cs, ids, err := p.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		_, err := cs[g].KeepAliveOnce(ctx, ids[g])
		return err
	}), nil
}

// checks reads the key (a linearizable read, etcd's default) and compares
// the holder.
func (p *etcdPeer) checks(d time.Duration, n int) (stats.Result, error) {
	cs, _, err := p.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		r, err := cs[g].Get(ctx, fmt.Sprintf("/held/e%d-%d", n, g))
		if err != nil {
			return err
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "h" {
			return errors.New("etcd: not held")
		}
		return nil
	}), nil
}

// fillList puts size keys under /list/ with one lease, 100 to a txn.
func (p *etcdPeer) fillList(size int) error {
	cs, err := p.clientsN(1)
	if err != nil {
		return err
	}
	ctx := context.Background()
	g, err := cs[0].Grant(ctx, 12*3600)
	if err != nil {
		return err
	}
	for from := 0; from < size; from += 100 {
		var ops []clientv3.Op
		for i := from; i < min(from+100, size); i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/list/lease-%06d", i), fmt.Sprintf("holder-%06d", i), clientv3.WithLease(g.ID)))
		}
		if _, err := cs[0].Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (p *etcdPeer) list(d time.Duration, n, size int) (stats.Result, error) {
	cs, err := p.clientsN(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		r, err := cs[g].Get(ctx, "/list/", clientv3.WithPrefix())
		if err != nil {
			return err
		}
		if len(r.Kvs) != size {
			return fmt.Errorf("etcd: listed %d, want %d", len(r.Kvs), size)
		}
		return nil
	}), nil
}

// ---- Redis ----

type redisPeer struct {
	proc    *process
	addr    string
	clients []*redis.Client
	held    map[int]bool
}

var (
	redisRelease = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
	redisExtend  = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)
)

// startRedis runs redis-server without persistence, or with an
// append-only file fsynced before every reply (appendfsync always).
func startRedis(parent string, aof bool) (*redisPeer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errNotInstalled
	}
	dir, err := os.MkdirTemp(parent, "leasebench-redis-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir, "--daemonize", "no"}
	if aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	proc, err := startProcess(dir, "redis-server", args...)
	if err != nil {
		return nil, err
	}
	p := &redisPeer{proc: proc, addr: "127.0.0.1:" + strconv.Itoa(port), held: map[int]bool{}}
	c := p.client()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("redis did not start (log in %s): %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p, nil
}

func (p *redisPeer) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.addr, PoolSize: 1, MaxRetries: -1})
	p.clients = append(p.clients, c)
	return c
}

func (p *redisPeer) clientsN(n int) []*redis.Client {
	for len(p.clients) < n {
		p.client()
	}
	return p.clients[:n]
}

func (p *redisPeer) stop() {
	for _, c := range p.clients {
		_ = c.Close()
	}
	p.proc.stop()
}

func (p *redisPeer) cycles(d time.Duration, n int) (stats.Result, error) {
	cs := p.clientsN(n)
	ctx := context.Background()
	return closedLoop(d, n, func(g, i int) error {
		key := fmt.Sprintf("cycles:c%d-%d-%d", n, g, i)
		ok, err := cs[g].SetNX(ctx, key, "h", time.Minute).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("redis: %s already held", key)
		}
		del, err := redisRelease.Run(ctx, cs[g], []string{key}, "h").Int()
		if err != nil {
			return err
		}
		if del != 1 {
			return fmt.Errorf("redis: %s not released", key)
		}
		return nil
	}), nil
}

func (p *redisPeer) holdOne(n int) ([]*redis.Client, error) {
	cs := p.clientsN(n)
	if p.held[n] {
		return cs, nil
	}
	for g := range n {
		if err := cs[g].SetNX(context.Background(), fmt.Sprintf("held:e%d-%d", n, g), "h", time.Hour).Err(); err != nil {
			return nil, err
		}
	}
	p.held[n] = true
	return cs, nil
}

func (p *redisPeer) extends(d time.Duration, n int) (stats.Result, error) {
	cs, err := p.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, i int) error {
		ms := (time.Hour + time.Duration(i)*time.Millisecond).Milliseconds()
		r, err := redisExtend.Run(ctx, cs[g], []string{fmt.Sprintf("held:e%d-%d", n, g)}, "h", ms).Int()
		if err != nil {
			return err
		}
		if r != 1 {
			return errors.New("redis: not held")
		}
		return nil
	}), nil
}

func (p *redisPeer) checks(d time.Duration, n int) (stats.Result, error) {
	cs, err := p.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		v, err := cs[g].Get(ctx, fmt.Sprintf("held:e%d-%d", n, g)).Result()
		if err != nil {
			return err
		}
		if v != "h" {
			return errors.New("redis: not held")
		}
		return nil
	}), nil
}

func (p *redisPeer) fillList(size int) error {
	c := p.clientsN(1)[0]
	ctx := context.Background()
	pipe := c.Pipeline()
	for i := range size {
		pipe.Set(ctx, fmt.Sprintf("list:lease-%06d", i), fmt.Sprintf("holder-%06d", i), 12*time.Hour)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// list scans the namespace's keys and reads their holders with one MGET.
func (p *redisPeer) list(d time.Duration, n, size int) (stats.Result, error) {
	cs := p.clientsN(n)
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		var keys []string
		var cursor uint64
		for {
			ks, next, err := cs[g].Scan(ctx, cursor, "list:*", 20000).Result()
			if err != nil {
				return err
			}
			keys = append(keys, ks...)
			if cursor = next; cursor == 0 {
				break
			}
		}
		vals, err := cs[g].MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		if len(vals) != size {
			return fmt.Errorf("redis: listed %d, want %d", len(vals), size)
		}
		return nil
	}), nil
}

var errNotInstalled = errors.New("not installed")
