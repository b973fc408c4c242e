package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/bench/stats"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/natskv"
)

// scaleResult is what holding many leases in one namespace costs.
type scaleResult struct {
	Leases int `json:"leases"`
	// Fill is how long claiming them took, from 32 clients.
	Fill time.Duration `json:"fill_ns"`
	// RSSPerLease is the growth of this process's resident memory (the
	// agent and its embedded NATS server, as leaseagent runs by default)
	// per lease, after a GC; HeapPerLease the Go heap's growth alone.
	RSSPerLease  float64 `json:"rss_bytes_per_lease"`
	HeapPerLease float64 `json:"heap_bytes_per_lease"`
	// Reload is how long a restarted agent (server, manager and service
	// started again on the same data) took to answer a check in the
	// namespace, which loads all of it, from the start of the restart.
	Reload time.Duration `json:"reload_ns"`
}

// vmRSS returns this process's resident memory in bytes.
func vmRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

func settledMemory() (rss int64, heap uint64, err error) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err = vmRSS()
	return rss, ms.HeapInuse, err
}

// scale claims count leases in one namespace of a fresh agent, measures
// the memory they take, restarts the agent on the same data and measures
// how long it takes to answer for them again.
func scale(parent string, sync bool, count int) (scaleResult, error) {
	res := scaleResult{Leases: count}
	e, err := startEnv(parent, sync)
	if err != nil {
		return res, err
	}
	dir := e.dir
	e.dir = "" // keep the data for the restart
	defer os.RemoveAll(dir)
	cs, err := e.clientsN(32)
	if err != nil {
		e.stop()
		return res, err
	}
	// One lease first, so the namespace's actor exists before the baseline.
	if err := cs[0].Namespace("scale").Claim("first", "h", 12*time.Hour); err != nil {
		e.stop()
		return res, err
	}
	rss0, heap0, err := settledMemory()
	if err != nil {
		e.stop()
		return res, err
	}
	start := time.Now()
	err = parallelEach(32, count-1, func(i int) error {
		return cs[i%32].Namespace("scale").Claim(fmt.Sprintf("lease-%07d", i), fmt.Sprintf("holder-%07d", i), 12*time.Hour)
	})
	res.Fill = time.Since(start)
	if err != nil {
		e.stop()
		return res, err
	}
	rss1, heap1, err := settledMemory()
	if err != nil {
		e.stop()
		return res, err
	}
	res.RSSPerLease = float64(rss1-rss0) / float64(count)
	res.HeapPerLease = (float64(heap1) - float64(heap0)) / float64(count)
	e.stop()

	start = time.Now()
	e2, err := startEnvIn(dir, sync)
	if err != nil {
		return res, fmt.Errorf("restart: %w", err)
	}
	e2.dir = ""
	defer e2.stop()
	cs, err = e2.clientsN(1)
	if err != nil {
		return res, err
	}
	// The first request for the namespace loads all of it; a check is
	// answered once that is done. (A list of 100k leases would not fit in
	// one NATS message.)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	last := fmt.Sprintf("lease-%07d", count-2)
	if err := cs[0].Namespace("scale").Token(last, fmt.Sprintf("holder-%07d", count-2)).(*client.Token).CheckContext(ctx, nil); err != nil {
		return res, fmt.Errorf("check after restart: %w", err)
	}
	res.Reload = time.Since(start)
	return res, nil
}

// failoverResult is how long a lease stays unheld after its holder dies,
// beyond the lease's own duration.
type failoverResult struct {
	Trials   int           `json:"trials"`
	Duration time.Duration `json:"duration_ns"`
	// Over is, per trial, when the waiting candidate held the lease minus
	// when the killed holder's last renewal ran out (its start plus the
	// duration).
	Over stats.Summary `json:"over"`
}

// holderEnv names the environment variable that makes leasebench a holder
// process: it claims a lease on the given server and renews it every
// duration/2, printing the wall-clock start of every successful claim,
// until it is killed.
const holderEnv = "LEASEBENCH_HOLDER"

// runHolder is the holder process; spec is url|namespace|lease|duration.
// It renews until the process is killed, so it returns only an error.
func runHolder(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad %s %q", holderEnv, spec)
	}
	d, err := time.ParseDuration(parts[3])
	if err != nil {
		return err
	}
	nc, err := nats.Connect(parts[0])
	if err != nil {
		return err
	}
	c, err := client.New(nc)
	if err != nil {
		return err
	}
	ns := c.Namespace(parts[1])
	for {
		start := time.Now()
		if err := ns.Claim(parts[2], "holder", d); err != nil {
			return err
		}
		fmt.Printf("held %d\n", start.UnixNano())
		time.Sleep(d / 2)
	}
}

// failover runs trials of: a holder process holds a lease, renewing it at
// duration/2; a candidate in this process waits for it; after the holder's
// second renewal it is killed with SIGKILL; the candidate claims the lease
// as soon as it is free. Each trial records how long after the holder's
// last renewal ran out the candidate held it.
func (e *env) failover(trials int, d time.Duration) (failoverResult, error) {
	res := failoverResult{Trials: trials, Duration: d}
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	cs, err := e.clientsN(1)
	if err != nil {
		return res, err
	}
	ns := cs[0].Namespace("failover")
	var r stats.Result
	for t := range trials {
		name := fmt.Sprintf("f%d", t)
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|failover|%s|%s", holderEnv, e.srv.ClientURL(), name, d))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, err
		}
		lines := bufio.NewScanner(out)
		var last time.Time
		for range 3 { // the claim and two renewals
			if !lines.Scan() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				return res, fmt.Errorf("holder process stopped: %v", lines.Err())
			}
			ns, err := strconv.ParseInt(strings.TrimPrefix(lines.Text(), "held "), 10, 64)
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				return res, fmt.Errorf("holder said %q", lines.Text())
			}
			last = time.Unix(0, ns)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		go func() { _, _ = io.Copy(io.Discard, out) }()
		_ = cmd.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 4*d+30*time.Second)
		var held time.Time
		for {
			if err := ns.WaitUntilExpiredContext(ctx, name); err != nil {
				cancel()
				return res, err
			}
			err := ns.ClaimContext(ctx, name, "candidate", d)
			if err == nil {
				held = time.Now()
				break
			}
			if !errors.Is(err, lease.ErrClaimDenied) {
				cancel()
				return res, err
			}
		}
		cancel()
		r.Ops++
		r.Latencies = append(r.Latencies, held.Sub(last.Add(d)))
	}
	r.Elapsed = time.Second
	res.Over = r.Summarise()
	return res, nil
}

// churnResult is what leases named once cost after their release, with
// their delete markers kept for ever and with the markers' TTL.
type churnResult struct {
	Names     int           `json:"names"`
	MarkerTTL time.Duration `json:"marker_ttl_ns"`
	// Kept and Expiring are the growth of the Go heap's live bytes (the
	// server and the agent; the clients are idle) from before the names
	// were used to a while after, with markers kept and with the TTL.
	Kept     int64 `json:"kept_heap_growth_bytes"`
	Expiring int64 `json:"expiring_heap_growth_bytes"`
}

// The churn part shortens the marker TTL (2 minutes by default) and the
// interval between full loads (a minute), at which a namespace forgets
// markers the server has removed, and measures churnSettle after the last
// release: by then both have passed.
const (
	churnMarkerTTL = 2 * time.Second
	churnMaxSleep  = 2 * time.Second
	churnSettle    = churnMarkerTTL + churnMaxSleep + 2*time.Second
)

// churn measures what names leases used once cost, with the markers kept
// and with their TTL, in two fresh agents one after the other.
func churn(parent string, names int) (churnResult, error) {
	res := churnResult{Names: names, MarkerTTL: churnMarkerTTL}
	var err error
	if res.Kept, err = churnOnce(parent, names, -1); err != nil {
		return res, fmt.Errorf("markers kept: %w", err)
	}
	if res.Expiring, err = churnOnce(parent, names, churnMarkerTTL); err != nil {
		return res, fmt.Errorf("markers with a TTL: %w", err)
	}
	return res, nil
}

// churnOnce claims and releases names distinct leases in one namespace of
// a fresh agent whose markers have ttl, from 32 clients, and returns the
// growth of the live heap churnSettle after the last release.
func churnOnce(parent string, names int, ttl time.Duration) (int64, error) {
	e, err := startEnv(parent, false, func(c *actors.Config) {
		c.DeleteMarkerTTL = ttl
		c.MaxSleep = churnMaxSleep
	})
	if err != nil {
		return 0, err
	}
	defer e.stop()
	cs, err := e.clientsN(32)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// A held lease keeps the namespace's actor (an idle one stops and
	// frees its memory, which would hide what its cache keeps).
	if err := cs[0].Namespace("churn").ClaimContext(ctx, "held", "h", 12*time.Hour); err != nil {
		return 0, err
	}
	before := liveHeap()
	err = parallelEach(32, names, func(i int) error {
		n, name := cs[i%32].Namespace("churn"), fmt.Sprintf("job-%07d", i)
		if err := n.ClaimContext(ctx, name, "h", time.Hour); err != nil {
			return err
		}
		return n.Release(ctx, name, "h")
	})
	if err != nil {
		return 0, err
	}
	time.Sleep(churnSettle)
	after := liveHeap()
	// Check that the markers went (or stayed) as configured.
	js, err := jetstream.New(e.agentNC)
	if err != nil {
		return 0, err
	}
	stream, err := js.Stream(ctx, "KV_"+natskv.DefaultBucket)
	if err != nil {
		return 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	switch left := info.State.NumSubjects; {
	case ttl > 0 && left >= uint64(names):
		return 0, fmt.Errorf("%d keys left %v after the last release, with a marker TTL of %v", left, churnSettle, ttl)
	case ttl < 0 && left < uint64(names):
		return 0, fmt.Errorf("%d keys left of %d names, with markers kept", left, names)
	}
	return int64(after) - int64(before), nil
}

// liveHeap returns the bytes of live objects on the Go heap, after two
// GCs: sync.Pools (the server keeps its block buffers in one) are emptied
// only by the second.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
