// Command leasebench measures leaseagent through its whole path (client
// over loopback TCP, the agent, the JetStream KV bucket) against the limits
// of what it is built on and against the lease services users would pick
// instead (etcd, Redis), all on this machine in one run, and prints every
// figure as a ratio against a baseline of the same run: these machines are
// noisy, and absolute rates from different runs mean little.
//
// Rows, at each number of clients in -clients, in each durability mode of
// -sync (fsync before ack, the product default; and without):
//
//   - limits: raw KV writes at revision, sequential (each of N goroutines
//     waits for its write) and pipelined (up to 4096 in flight); a raw NATS
//     request-reply echo over loopback TCP; the data disk's fsync rate.
//   - ours: claim+release cycles of distinct leases; extends of held leases,
//     as holders renew (the same duration each time: the agent keeps them
//     in memory) and longer each time (so that each is written); checks;
//     and a list of a namespace of -list-size leases; through package
//     client.
//   - peers, when installed (bench/install-peers.sh): etcd with its default
//     fsync; Redis without persistence and with appendfsync always.
//   - expiry: -expiry-leases leases due to expire within one second; how
//     late their expired events arrive.
//   - steady: -steady-leases leases, every holder renewing at half the
//     lease duration on a fixed schedule: the renewal rate kept up, its
//     latency, and any lease lost.
//   - flood: -flood-listers goroutines in another process list the
//     namespace of -list-size leases flat out, through package client
//     (which backs off when refused) and raw (sending again at once); one
//     client's checks in another namespace are timed, before and during
//     the flood.
//
// See docs/benchmarks.md, "The suite (issue 7)", for how to read it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/leaseagent/lease/bench/stats"
)

type options struct {
	duration     time.Duration
	clients      []int
	modes        []bool // sync on/off, in order
	jsonOut      bool
	peers        bool
	expiry       bool
	expiryLeases int
	expiryLead   time.Duration
	listSize     int
	scaleLeases  int
	steadyLeases int
	steadyDur    time.Duration
	steadyRounds int
	trials       int
	failoverDur  time.Duration
	dir          string
	parts        map[string]bool
	cpuProfile   string
	floodListers []int
}

// Parts of the suite that -parts can select.
var allParts = []string{"core", "list", "expiry", "failover", "scale", "churn", "steady", "flood", "peers"}

func main() {
	if spec := os.Getenv(holderEnv); spec != "" {
		// runHolder renews until the process is killed: it returns only
		// on failure.
		fmt.Fprintln(os.Stderr, "leasebench holder:", runHolder(spec))
		os.Exit(1)
	}
	if spec := os.Getenv(flooderEnv); spec != "" {
		if err := runFlooder(spec); err != nil {
			fmt.Fprintln(os.Stderr, "leasebench flooder:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -help: the flag package printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "leasebench:", err)
		os.Exit(2)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "leasebench: -cpuprofile:", err)
			os.Exit(1)
		}
		defer f.Close()
	}
	rep, err := run(o, os.Stderr)
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "leasebench:", err)
		os.Exit(1)
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "leasebench:", err)
			os.Exit(1)
		}
		return
	}
	rep.print(os.Stdout)
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("leasebench", flag.ContinueOnError)
	var o options
	var clients, syncMode, floodListers string
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "how long each row runs")
	fs.StringVar(&clients, "clients", "1,32", "comma-separated numbers of concurrent clients")
	fs.StringVar(&syncMode, "sync", "both", "durability modes: on (fsync before ack, the default), off, or both")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	parts := fs.String("parts", strings.Join(allParts, ","), "comma-separated parts to run: core (limits, cycles, extends, checks), list, expiry, failover, scale (without fsync), churn (leases named once, released: what their delete markers cost; -scale-leases of them), steady (every holder renewing at duration/2), flood (lists flat out on one namespace, checks timed in another), peers (etcd and Redis, if installed)")
	fs.IntVar(&o.expiryLeases, "expiry-leases", 10000, "leases in the expiry row, due within one second")
	fs.DurationVar(&o.expiryLead, "expiry-lead", 0, "how far ahead the expiry row's leases are due (0: 5s without fsync, 15s with)")
	fs.IntVar(&o.listSize, "list-size", 10000, "leases in the listed namespace")
	fs.StringVar(&floodListers, "flood-listers", "64,512", "comma-separated numbers of goroutines listing flat out in the flood part")
	fs.IntVar(&o.scaleLeases, "scale-leases", 100000, "leases in the scale part's namespace")
	fs.IntVar(&o.steadyLeases, "steady-leases", 100000, "leases in the steady part's namespace, each renewed every -steady-duration/2")
	fs.DurationVar(&o.steadyDur, "steady-duration", 90*time.Second, "lease duration in the steady part")
	fs.IntVar(&o.steadyRounds, "steady-rounds", 2, "renewals of every lease in the steady part")
	fs.IntVar(&o.trials, "failover-trials", 5, "holder processes killed in the failover part")
	fs.DurationVar(&o.failoverDur, "failover-duration", 2*time.Second, "lease duration in the failover part")
	fs.IntVar(&replicas, "replicas", 1, "the bucket's replicas: 1 (one embedded server) or 3 (a cluster of three embedded servers in this process; the agent and clients on the first)")
	fs.DurationVar(&markerTTL, "marker-ttl", 0, "actors.Config.DeleteMarkerTTL of the agents the suite starts (0: the default; negative: markers kept for ever); the churn part sets its own")
	fs.IntVar(&minBatch, "min-batch", -1, "group commit's actors.Config.MinBatch (0: off); -1: as leaseagent with its embedded server (on with fsync, off without)")
	fs.StringVar(&o.dir, "dir", "", "parent directory of the servers' data (default: the system temporary directory)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server, agent and clients share this process) to `file`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-clients: %q is not a positive number", s)
		}
		o.clients = append(o.clients, n)
	}
	for _, s := range strings.Split(floodListers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-flood-listers: %q is not a positive number", s)
		}
		o.floodListers = append(o.floodListers, n)
	}
	o.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allParts, p) {
			return o, fmt.Errorf("-parts: %q is not one of %s", p, strings.Join(allParts, ", "))
		}
		o.parts[p] = true
	}
	o.peers, o.expiry = o.parts["peers"], o.parts["expiry"]
	switch syncMode {
	case "both":
		o.modes = []bool{true, false}
	case "on":
		o.modes = []bool{true}
	case "off":
		o.modes = []bool{false}
	default:
		return o, fmt.Errorf("-sync: %q is not both, on or off", syncMode)
	}
	if o.duration <= 0 || o.listSize < 1 || o.expiryLeases < 1 || o.expiryLead < 0 || o.scaleLeases < 2 || o.trials < 1 || o.failoverDur <= 0 ||
		o.steadyLeases < 1 || o.steadyDur <= 0 || o.steadyRounds < 1 {
		return o, fmt.Errorf("-duration, -list-size, -expiry-leases, -scale-leases, -failover-trials, -failover-duration, -steady-leases, -steady-duration and -steady-rounds must be positive")
	}
	if replicas != 1 && replicas != 3 {
		return o, fmt.Errorf("-replicas: %d is not 1 or 3", replicas)
	}
	return o, nil
}

// Row names.
const (
	rowFsync     = "fsync of a 64-byte append"
	rowKVSeq     = "raw KV write at revision, sequential"
	rowKVPipe    = "raw KV write at revision, pipelined"
	rowEcho      = "raw request-reply echo"
	rowEchoBig   = "raw request-reply echo, list-sized reply"
	rowCycle     = "claim+release cycle"
	rowExtend    = "extend"
	rowLonger    = "extend, longer each time"
	rowCheck     = "check"
	rowList      = "list"
	modeFsync    = "fsync"
	modeNoFsync  = "no-fsync"
	peerEtcd     = "etcd"
	peerRedis    = "redis"
	peerRedisAOF = "redis-aof-always"
)

func modeName(sync bool) string {
	if sync {
		return modeFsync
	}
	return modeNoFsync
}

// row is one measured line.
type row struct {
	Group   string `json:"group"` // limit, ours, peer
	Mode    string `json:"mode"`  // fsync, no-fsync; a peer's name
	Name    string `json:"name"`
	Clients int    `json:"clients"`
	stats.Summary
	Baseline string   `json:"baseline,omitempty"` // what Ratio divides by
	Ratio    *float64 `json:"ratio,omitempty"`
	Target   string   `json:"target,omitempty"`
	// Ceiling is the highest Ratio this machine allows the row, from what
	// its baselines cost: see cycleCeiling.
	Ceiling *float64 `json:"ceiling,omitempty"`
}

type report struct {
	Start    time.Time                 `json:"start"`
	Machine  string                    `json:"machine"`
	Versions map[string]string         `json:"versions"`
	Duration time.Duration             `json:"duration_per_row_ns"`
	Rows     []*row                    `json:"rows"`
	Expiry   map[string]expiryResult   `json:"expiry,omitempty"`   // by mode
	Failover map[string]failoverResult `json:"failover,omitempty"` // by mode
	Scale    *scaleResult              `json:"scale,omitempty"`
	Churn    *churnResult              `json:"churn,omitempty"`
	Steady   map[string]steadyResult   `json:"steady,omitempty"`
	Flood    map[string][]floodResult  `json:"flood,omitempty"` // by mode
	Notes    []string                  `json:"notes,omitempty"`
}

// failed notes that a part of the suite failed, in the log and the report.
func (r *report) failed(log io.Writer, part string, err error) {
	line := fmt.Sprintf("%s failed: %v", part, err)
	fmt.Fprintln(log, line)
	r.Notes = append(r.Notes, line)
}

func (r *report) find(group, mode, name string, clients int) *row {
	for _, x := range r.Rows {
		if x.Group == group && x.Mode == mode && x.Name == name && x.Clients == clients {
			return x
		}
	}
	return nil
}

func (r *report) add(log io.Writer, group, mode, name string, clients int, res stats.Result, err error) *row {
	x := &row{Group: group, Mode: mode, Name: name, Clients: clients}
	if err != nil {
		x.FirstError = err.Error()
	} else {
		x.Summary = res.Summarise()
	}
	if group == "peer" {
		// The peer's server is another process: this one's CPU is only
		// its clients'.
		x.CPUPerOp, x.Cores = 0, 0
	}
	r.Rows = append(r.Rows, x)
	fmt.Fprintf(log, "  %-9s %-16s %-42s %3d  %10s  p50 %8s  p99 %8s", group, mode, name, clients,
		stats.FormatRate(x.Rate), stats.FormatLatency(x.P50), stats.FormatLatency(x.P99))
	if x.Errors > 0 || x.FirstError != "" {
		fmt.Fprintf(log, "  errors %d: %s", x.Errors, x.FirstError)
	}
	fmt.Fprintln(log)
	return x
}

func ratioOf(x float64) *float64 {
	if math.IsNaN(x) {
		return nil
	}
	return &x
}

func run(o options, log io.Writer) (*report, error) {
	rep := &report{
		Start:    time.Now(),
		Machine:  machine(),
		Duration: o.duration,
		Versions: map[string]string{
			"go":          runtime.Version(),
			"nats-server": server.VERSION,
			"etcd":        commandVersion("etcd", "--version"),
			"redis":       commandVersion("redis-server", "--version"),
			"min-batch":   fmt.Sprintf("fsync %d, no-fsync %d", minBatchFor(true), minBatchFor(false)),
			"replicas":    strconv.Itoa(replicas),
		},
		Expiry:   map[string]expiryResult{},
		Failover: map[string]failoverResult{},
		Flood:    map[string][]floodResult{},
	}
	fmt.Fprintf(log, "leasebench: %s; %s\n", rep.Machine, versionLine(rep.Versions))

	// The disk's own limit, once.
	tmp, err := os.MkdirTemp(o.dir, "leasebench-disk-")
	if err != nil {
		return nil, err
	}
	res, err := fsyncRate(tmp, o.duration)
	_ = os.RemoveAll(tmp)
	rep.add(log, "limit", "disk", rowFsync, 1, res, err)

	for _, sync := range o.modes {
		mode := modeName(sync)
		fmt.Fprintf(log, "mode %s\n", mode)
		if err := runMode(o, rep, log, sync); err != nil {
			return nil, fmt.Errorf("mode %s: %w", mode, err)
		}
	}
	if o.parts["scale"] {
		fmt.Fprintf(log, "scale: %d leases, no fsync\n", o.scaleLeases)
		x, err := scale(o.dir, false, o.scaleLeases)
		if err != nil {
			rep.failed(log, "scale", err)
		} else {
			rep.Scale = &x
			fmt.Fprintf(log, "  filled in %v; RSS %.0f B/lease, heap %.0f B/lease; reload %v\n", x.Fill.Round(time.Millisecond), x.RSSPerLease, x.HeapPerLease, x.Reload.Round(time.Millisecond))
		}
	}
	if o.parts["churn"] {
		fmt.Fprintf(log, "churn: %d leases claimed and released once, no fsync\n", o.scaleLeases)
		x, err := churn(o.dir, o.scaleLeases)
		if err != nil {
			rep.failed(log, "churn", err)
		} else {
			rep.Churn = &x
			fmt.Fprintf(log, "  live heap grew %s with markers kept, %s with their TTL\n", mib(x.Kept), mib(x.Expiring))
		}
	}
	if o.parts["steady"] {
		for _, sync := range o.modes {
			mode := modeName(sync)
			fmt.Fprintf(log, "steady %s: %d leases of %v, renewed every %v\n", mode, o.steadyLeases, o.steadyDur, o.steadyDur/2)
			x, err := steady(o.dir, sync, o.steadyLeases, o.steadyDur, o.steadyRounds)
			if err != nil {
				rep.failed(log, "steady "+mode, err)
				continue
			}
			if rep.Steady == nil {
				rep.Steady = make(map[string]steadyResult)
			}
			rep.Steady[mode] = x
		}
	}
	if o.peers {
		runPeers(o, rep, log)
	}
	rep.ratios(o)
	return rep, nil
}

func runMode(o options, rep *report, log io.Writer, sync bool) error {
	mode := modeName(sync)
	e, err := startEnv(o.dir, sync)
	if err != nil {
		return err
	}
	defer e.stop()
	for _, n := range o.clients {
		if !o.parts["core"] {
			break
		}
		tag := fmt.Sprintf("n%d", n)
		res, err := e.rawKVSequential(o.duration, n, tag)
		rep.add(log, "limit", mode, rowKVSeq, n, res, err)
		res, err = e.rawKVPipelined(o.duration, n, tag)
		rep.add(log, "limit", mode, rowKVPipe, n, res, err)
		res, err = e.echo(o.duration, n, 32, 32)
		rep.add(log, "limit", mode, rowEcho, n, res, err)
		res, err = e.cycles(o.duration, n)
		rep.add(log, "ours", mode, rowCycle, n, res, err)
		res, err = e.extends(o.duration, n, false)
		rep.add(log, "ours", mode, rowExtend, n, res, err)
		res, err = e.extends(o.duration, n, true)
		rep.add(log, "ours", mode, rowLonger, n, res, err)
		res, err = e.checks(o.duration, n)
		rep.add(log, "ours", mode, rowCheck, n, res, err)
	}
	var size int // of a list reply
	if o.parts["list"] || o.parts["flood"] {
		fill := time.Now()
		if size, err = e.fillList(o.listSize); err != nil {
			return err
		}
		fmt.Fprintf(log, "  filled a namespace with %d leases in %v; a list reply is %d bytes\n", o.listSize, time.Since(fill).Round(time.Millisecond), size)
	}
	if o.parts["list"] {
		for _, n := range o.clients {
			res, err := e.echo(o.duration, n, 32, size)
			rep.add(log, "limit", mode, rowEchoBig, n, res, err)
			res, err = e.list(o.duration, n, o.listSize)
			rep.add(log, "ours", mode, fmt.Sprintf("%s %d", rowList, o.listSize), n, res, err)
		}
	}
	if o.parts["flood"] {
		for _, n := range o.floodListers {
			for _, raw := range []bool{false, true} {
				x, err := e.flood(o.duration, n, o.listSize, raw)
				if err != nil {
					return fmt.Errorf("flood: %w", err)
				}
				rep.Flood[mode] = append(rep.Flood[mode], x)
				fmt.Fprintf(log, "  flood: %d listers (raw %v): lists %d, refused %d, failed %d; checks p50 %s p99 %s, quiet p50 %s p99 %s\n",
					n, raw, x.Lists, x.Refused, x.Failed, stats.FormatLatency(x.Flooded.P50), stats.FormatLatency(x.Flooded.P99),
					stats.FormatLatency(x.Quiet.P50), stats.FormatLatency(x.Quiet.P99))
			}
		}
	}
	if o.expiry {
		lead := o.expiryLead
		if lead == 0 {
			lead = 5 * time.Second
			if sync {
				lead = 15 * time.Second
			}
		}
		x, err := e.expiry(o.expiryLeases, lead)
		if err != nil {
			return fmt.Errorf("expiry: %w", err)
		}
		rep.Expiry[mode] = x
		fmt.Fprintf(log, "  expiry: %d/%d events; late p50 %s p99 %s max %s\n", x.Received, x.Claimed,
			stats.FormatLatency(x.Late.P50), stats.FormatLatency(x.Late.P99), stats.FormatLatency(x.Late.Max))
	}
	if o.parts["failover"] {
		x, err := e.failover(o.trials, o.failoverDur)
		if err != nil {
			return fmt.Errorf("failover: %w", err)
		}
		rep.Failover[mode] = x
		fmt.Fprintf(log, "  failover: %d trials, %v leases; over the duration p50 %s max %s\n", x.Trials, x.Duration,
			stats.FormatLatency(x.Over.P50), stats.FormatLatency(x.Over.Max))
	}
	return nil
}

func runPeers(o options, rep *report, log io.Writer) {
	starts := []struct {
		name  string
		start func() (peer, error)
	}{
		{peerEtcd, func() (peer, error) { return startEtcd(o.dir) }},
		{peerRedis, func() (peer, error) { return startRedis(o.dir, false) }},
		{peerRedisAOF, func() (peer, error) { return startRedis(o.dir, true) }},
	}
	for _, s := range starts {
		p, err := s.start()
		if err != nil {
			line := fmt.Sprintf("peer %s skipped: %v", s.name, err)
			if err == errNotInstalled {
				line += " (install with: sudo bench/install-peers.sh)"
			}
			fmt.Fprintln(log, line)
			rep.Notes = append(rep.Notes, line)
			continue
		}
		fmt.Fprintf(log, "peer %s\n", s.name)
		for _, n := range o.clients {
			if !o.parts["core"] {
				break
			}
			res, err := p.cycles(o.duration, n)
			rep.add(log, "peer", s.name, rowCycle, n, res, err)
			res, err = p.extends(o.duration, n)
			rep.add(log, "peer", s.name, rowExtend, n, res, err)
			res, err = p.checks(o.duration, n)
			rep.add(log, "peer", s.name, rowCheck, n, res, err)
		}
		if o.parts["list"] {
			if err := p.fillList(o.listSize); err != nil {
				line := fmt.Sprintf("peer %s: fill the list: %v", s.name, err)
				fmt.Fprintln(log, line)
				rep.Notes = append(rep.Notes, line)
			} else {
				for _, n := range o.clients {
					res, err := p.list(o.duration, n, o.listSize)
					rep.add(log, "peer", s.name, fmt.Sprintf("%s %d", rowList, o.listSize), n, res, err)
				}
			}
		}
		p.stop()
	}
}

// ratios fills in each row's ratio against its baseline.
func (r *report) ratios(o options) {
	for _, x := range r.Rows {
		switch x.Group {
		case "ours":
			var base *row
			div := 1.0
			switch {
			case x.Name == rowCycle:
				base, div = r.find("limit", x.Mode, rowKVPipe, x.Clients), 2
				x.Baseline = "raw pipelined writes / 2"
				if x.Mode == modeNoFsync {
					x.Target = ">= 0.5"
				}
				x.Ceiling = r.cycleCeiling(x)
			case x.Name == rowExtend || x.Name == rowLonger:
				base = r.find("limit", x.Mode, rowKVSeq, x.Clients)
				x.Baseline = "raw sequential writes"
				if x.Mode == modeNoFsync && x.Name == rowExtend {
					x.Target = ">= 0.5"
				}
			case x.Name == rowCheck:
				base = r.find("limit", x.Mode, rowEcho, x.Clients)
				x.Baseline = "raw request-reply"
				if x.Mode == modeNoFsync {
					x.Target = ">= 0.8"
				}
			case strings.HasPrefix(x.Name, rowList):
				base = r.find("limit", x.Mode, rowEchoBig, x.Clients)
				x.Baseline = "raw request-reply, same reply size"
			}
			if base != nil {
				x.Ratio = ratioOf(stats.Ratio(x.Rate, base.Rate/div))
			}
		case "peer":
			// ours / peer, in the matching durability mode.
			mode := modeFsync
			if x.Mode == peerRedis {
				mode = modeNoFsync
			}
			ours := r.find("ours", mode, x.Name, x.Clients)
			x.Baseline = "ours (" + mode + ") / " + x.Mode
			if ours != nil {
				x.Ratio = ratioOf(stats.Ratio(ours.Rate, x.Rate))
				if x.Clients == 32 && ((x.Mode == peerEtcd && x.Name == rowCycle) || (x.Mode == peerRedisAOF && x.Name == rowExtend)) {
					x.Target = "> 1"
				}
			}
		}
	}
}

// cycleCeiling bounds what a claim+release cycle can reach on this machine
// without fsync, where the server, the agent and the clients all wait on
// the same cores, not on a disk. A cycle through the whole path does at
// least what two request-replies over TCP and two KV writes do, and their
// CPU costs add up: a cycle costs at least 2e + 2w of CPU, where e is
// echo's CPU per op and w a pipelined write's, and its baseline, pipelined
// writes / 2, costs 2w. When both rows keep the same cores busy (the
// cores column: on a quiet machine, all of them), the ratio is at most
// 2w / (2e + 2w) = w / (e + w), whatever the agent does; if other work
// left the baseline fewer cores than the cycle, the bound grows by the
// cycle's cores over the baseline's. Generous on purpose: it counts
// nothing for the agent's own work. Nil with fsync (the
// disk, not the CPU, bounds the baseline) or when a baseline's CPU was not
// measured.
func (r *report) cycleCeiling(x *row) *float64 {
	echo, pipe := r.find("limit", x.Mode, rowEcho, x.Clients), r.find("limit", x.Mode, rowKVPipe, x.Clients)
	if x.Mode != modeNoFsync || echo == nil || pipe == nil || echo.CPUPerOp <= 0 || pipe.CPUPerOp <= 0 {
		return nil
	}
	w, e := pipe.CPUPerOp.Seconds(), echo.CPUPerOp.Seconds()
	return ratioOf(w / (e + w))
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "leasebench %s: %s\n%s; %v per row\n\n", r.Start.Format(time.DateTime), r.Machine, versionLine(r.Versions), r.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "group\tmode\trow\tclients\tops/s\tp50\tp99\tcpu/op\tcores\tratio\tagainst\ttarget\tceiling\t")
	var errs []string
	for _, x := range r.Rows {
		ratio := "-"
		if x.Ratio != nil {
			ratio = stats.FormatRatio(*x.Ratio)
		}
		name := x.Name
		if x.Errors > 0 || x.FirstError != "" {
			name += " (!)"
			errs = append(errs, fmt.Sprintf("(!) %s %s %s at %d: %d errors, first: %s", x.Group, x.Mode, x.Name, x.Clients, x.Errors, x.FirstError))
		}
		cores, ceiling := "-", "-"
		if x.Cores > 0 {
			cores = fmt.Sprintf("%.2f", x.Cores)
		}
		if x.Ceiling != nil {
			ceiling = stats.FormatRatio(*x.Ceiling)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Group, x.Mode, name, x.Clients,
			stats.FormatRate(x.Rate), stats.FormatLatency(x.P50), stats.FormatLatency(x.P99),
			stats.FormatLatency(x.CPUPerOp), cores, ratio, x.Baseline, x.Target, ceiling)
	}
	_ = tw.Flush()
	for _, line := range errs {
		fmt.Fprintln(w, line)
	}
	if len(r.Expiry) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "expiry\tleases\tevents\tlate p50\tlate p99\tlate max\ttarget\t")
		for _, mode := range []string{modeFsync, modeNoFsync} {
			x, ok := r.Expiry[mode]
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\tp99 <= 10ms\t\n", mode, x.Claimed, x.Received,
				stats.FormatLatency(x.Late.P50), stats.FormatLatency(x.Late.P99), stats.FormatLatency(x.Late.Max))
		}
		_ = tw.Flush()
	}
	if len(r.Failover) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "failover\ttrials\tduration\tover p50\tover max\ttarget\t")
		for _, mode := range []string{modeFsync, modeNoFsync} {
			if x, ok := r.Failover[mode]; ok {
				fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t<= 100ms\t\n", mode, x.Trials, x.Duration,
					stats.FormatLatency(x.Over.P50), stats.FormatLatency(x.Over.Max))
			}
		}
		_ = tw.Flush()
	}
	if x := r.Scale; x != nil {
		fmt.Fprintf(w, "\nscale (no fsync): %d leases in one namespace, filled in %v; RSS %.0f B/lease (target <= 1024), Go heap %.0f B/lease; restart to the first answer %v\n",
			x.Leases, x.Fill.Round(time.Millisecond), x.RSSPerLease, x.HeapPerLease, x.Reload.Round(time.Millisecond))
	}
	if x := r.Churn; x != nil {
		fmt.Fprintf(w, "\nchurn (no fsync): %d leases claimed and released once; %v after the last release the live Go heap had grown %s (%.0f B per lease) with delete markers kept, %s (%.0f B per lease) with a marker TTL of %v\n",
			x.Names, churnSettle, mib(x.Kept), float64(x.Kept)/float64(x.Names), mib(x.Expiring), float64(x.Expiring)/float64(x.Names), x.MarkerTTL)
	}

	if len(r.Steady) > 0 {
		fmt.Fprintln(w, "\nsteady: every holder renews at duration/2")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "mode\tleases\tduration\tneeded\trenewed\tp50\tp99\tmax lag\tlost\tCPU cores\t")
		for _, mode := range []string{modeFsync, modeNoFsync} {
			if x, ok := r.Steady[mode]; ok {
				fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t\n", mode, x.Leases, x.Duration,
					stats.FormatRate(x.Needed), stats.FormatRate(x.Renewals.Rate), stats.FormatLatency(x.Renewals.P50),
					stats.FormatLatency(x.Renewals.P99), stats.FormatLatency(x.Lag), x.Lost, x.CPU)
			}
		}
		_ = tw.Flush()
	}
	if len(r.Flood) > 0 {
		fmt.Fprintln(w, "\nflood: listers list one namespace flat out; one client checks a lease in another")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "mode\tlisters\tre-send\tlists\trefused\tfailed\tquiet p50\tquiet p99\tflooded p50\tflooded p99\tflooded max\tchecks\t")
		for _, mode := range []string{modeFsync, modeNoFsync} {
			for _, x := range r.Flood[mode] {
				resend := "backoff"
				if x.Raw {
					resend = "at once"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t\n", mode, x.Listers, resend, x.Lists, x.Refused, x.Failed,
					stats.FormatLatency(x.Quiet.P50), stats.FormatLatency(x.Quiet.P99),
					stats.FormatLatency(x.Flooded.P50), stats.FormatLatency(x.Flooded.P99), stats.FormatLatency(x.Flooded.Max), x.Flooded.Ops)
			}
		}
		_ = tw.Flush()
		for _, mode := range []string{modeFsync, modeNoFsync} {
			for _, x := range r.Flood[mode] {
				if x.FirstError != "" || x.Flooded.FirstError != "" {
					fmt.Fprintf(w, "(!) flood %s %d listers: %d lists failed, first: %s; %d checks failed, first: %s\n",
						mode, x.Listers, x.Failed, x.FirstError, x.Flooded.Errors, x.Flooded.FirstError)
				}
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, n)
	}
}

// machine describes the CPU and core count.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s/%s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH)
}

func commandVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "not installed"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func versionLine(v map[string]string) string {
	return fmt.Sprintf("go %s, nats-server %s, etcd: %s, redis: %s; group commit MinBatch: %s; bucket replicas: %s", v["go"], v["nats-server"], v["etcd"], v["redis"], v["min-batch"], v["replicas"])
}

// mib formats a byte count in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
