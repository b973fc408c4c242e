package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/bench/stats"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// floodResult is what a flood of lists on one namespace does to another
// namespace's checks.
type floodResult struct {
	Listers int  `json:"listers"`
	Raw     bool `json:"raw"` // the listers re-send at once, ignoring "unavailable"
	// Quiet are one client's checks of a lease in another namespace with
	// nothing else running; Flooded the same during the flood.
	Quiet   stats.Summary `json:"quiet"`
	Flooded stats.Summary `json:"flooded"`
	floodCounts
}

// floodCounts are the lists served, refused (CODE_UNAVAILABLE: raw
// listers only, the others retry) and failed otherwise (timed out) during
// a flood.
type floodCounts struct {
	Lists      int64  `json:"lists"`
	Refused    int64  `json:"refused"`
	Failed     int64  `json:"failed"`
	FirstError string `json:"first_error,omitempty"`
}

// flood has listers goroutines in another process (runFlooder), each on
// its own connection, list the namespace of size leases ("list", filled by
// fillList) flat out for d, while one client in this process, the
// agent's, checks a lease it holds in namespace "flood-other" and times
// each check. raw listers send the list request again at once whatever the
// answer, as a misbehaving client would; the others use package client,
// which backs off on "unavailable".
func (e *env) flood(d time.Duration, listers, size int, raw bool) (floodResult, error) {
	res := floodResult{Listers: listers, Raw: raw}
	cs, err := e.clientsN(1)
	if err != nil {
		return res, err
	}
	ns := cs[0].Namespace("flood-other")
	if err := ns.Claim("l", "h", time.Hour); err != nil {
		return res, err
	}
	token := ns.Token("l", "h").(*client.Token)
	check := func(_, _ int) error { return token.CheckContext(context.Background(), nil) }
	quiet := closedLoop(d, 1, check)
	res.Quiet = quiet.Summarise()

	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%t|%d", flooderEnv, e.srv.ClientURL(), listers, raw, size))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { _ = cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "flooding" {
		return res, fmt.Errorf("flooder process said %q (%v)", lines.Text(), lines.Err())
	}
	flooded := closedLoop(d, 1, check)
	res.Flooded = flooded.Summarise()
	_ = stdin.Close() // stops the flood
	if !lines.Scan() {
		return res, fmt.Errorf("flooder process stopped without its result: %v", lines.Err())
	}
	if err := json.Unmarshal(lines.Bytes(), &res.floodCounts); err != nil {
		return res, fmt.Errorf("flooder process said %q: %w", lines.Text(), err)
	}
	return res, nil
}

// flooderEnv names the environment variable that makes leasebench a
// flooder process: url|listers|raw|size (see runFlooder).
const flooderEnv = "LEASEBENCH_FLOODER"

// runFlooder is the flooder process: it starts its listers, says
// "flooding", lists until its standard input closes, then prints its
// floodCounts as JSON.
func runFlooder(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad %s %q", flooderEnv, spec)
	}
	url := parts[0]
	listers, err1 := strconv.Atoi(parts[1])
	raw, err2 := strconv.ParseBool(parts[2])
	size, err3 := strconv.Atoi(parts[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("bad %s %q: %w", flooderEnv, spec, err)
	}
	conns := make([]*nats.Conn, listers)
	for g := range conns {
		var err error
		if conns[g], err = nats.Connect(url, nats.Name("leasebench-flood")); err != nil {
			return err
		}
		defer conns[g].Close()
	}
	body, err := proto.Marshal(&messages.ListRequest{})
	if err != nil {
		return err
	}
	subject := protocol.RequestSubject(protocol.DefaultPrefix, protocol.OpList, "list")
	// Stopping the flood ends the calls in progress; what they return
	// then is not counted.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		res                    floodCounts
		lists, refused, failed atomic.Int64
		wg                     sync.WaitGroup
		mu                     sync.Mutex
	)
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		failed.Add(1)
		mu.Lock()
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
		mu.Unlock()
	}
	list := func(c *client.Client, nc *nats.Conn) {
		if !raw {
			switch ls, err := c.Namespace("list").Leases(ctx); {
			case err != nil:
				fail(err)
			case len(ls) != size:
				fail(fmt.Errorf("listed %d leases, want %d", len(ls), size))
			default:
				lists.Add(1)
			}
			return
		}
		m, err := nc.RequestWithContext(ctx, subject, body)
		if err != nil {
			fail(err)
			return
		}
		var out messages.ListReply
		if err := proto.Unmarshal(m.Data, &out); err != nil {
			fail(err)
			return
		}
		switch err := protocol.Err(out.GetStatus()); {
		case err == nil:
			lists.Add(1)
		case errors.Is(err, protocol.ErrUnavailable):
			refused.Add(1)
		default:
			fail(err)
		}
	}
	for _, nc := range conns {
		c, err := client.New(nc)
		if err != nil {
			return err
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				list(c, nc)
			}
		})
	}
	fmt.Println("flooding")
	_, _ = io.Copy(io.Discard, os.Stdin)
	stop()
	wg.Wait()
	res.Lists, res.Refused, res.Failed = lists.Load(), refused.Load(), failed.Load()
	return json.NewEncoder(os.Stdout).Encode(res)
}
