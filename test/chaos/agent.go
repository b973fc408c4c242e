package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds how long an agent may take to say it serves, and to
// exit once killed.
const readyTimeout = 30 * time.Second

// Agent is a `leaseagent` process serving its embedded NATS server on one
// address and data directory, which a run kills, restarts, pauses and
// resumes. It is safe for concurrent use.
type Agent struct {
	bin, dataDir string
	env          []string
	args         []string // beyond --listen and --data-dir
	addr         string   // 127.0.0.1:port, kept across restarts
	natsURL      string   // of an external server, instead of addr and dataDir
	log          *os.File // stderr of every incarnation, appended

	mu     sync.Mutex
	proc   *agentProc // nil while killed
	closed bool
}

// agentProc is one incarnation of the agent.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
}

// StartAgent starts `bin --listen 127.0.0.1:<free port> --data-dir dataDir
// args...` with environment env, its stderr appended to logPath, and waits
// until it says it serves.
func StartAgent(bin, dataDir, logPath string, env []string, args ...string) (*Agent, error) {
	a, err := newAgent(bin, dataDir, logPath, env, args...)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if a.addr, err = freeAddr(); err == nil {
			err = a.start()
		}
		if err == nil {
			return a, nil
		}
		if attempt == 3 || !strings.Contains(a.LogTail(5), "address already in use") {
			_ = a.log.Close()
			return nil, err
		}
		// Someone took the port between freeAddr and the agent: try another.
	}
}

// StartExternalAgent starts `bin --nats-url natsURL args...`, an agent on
// a NATS server it does not run, with environment env and its stderr
// appended to logPath, and waits until it says it serves.
func StartExternalAgent(bin, natsURL, logPath string, env []string, args ...string) (*Agent, error) {
	a, err := newAgent(bin, "", logPath, env, args...)
	if err != nil {
		return nil, err
	}
	a.natsURL = natsURL
	if err := a.start(); err != nil {
		_ = a.log.Close()
		return nil, err
	}
	return a, nil
}

// newAgent returns an Agent that has not started, its log open.
func newAgent(bin, dataDir, logPath string, env []string, args ...string) (*Agent, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Agent{bin: bin, dataDir: dataDir, env: env, args: args, log: log}, nil
}

// freeAddr returns an address of 127.0.0.1 that nothing listened on a
// moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// Addr returns the host:port of the agent's NATS server.
func (a *Agent) Addr() string { return a.addr }

// start starts an incarnation and waits for its ready line.
func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("agent closed")
	}
	if a.proc != nil {
		return errors.New("agent already running")
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	where := []string{"--listen", a.addr, "--data-dir", a.dataDir}
	// Clustered agents may say more after the data directory.
	want := fmt.Sprintf("leaseagent listening on nats://%s (embedded, data in %s", a.addr, a.dataDir)
	if a.natsURL != "" {
		where = []string{"--nats-url", a.natsURL}
		want = "leaseagent listening on "
	}
	cmd := exec.Command(a.bin, append(where, a.args...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = a.env, outW, a.log
	err = cmd.Start()
	_ = outW.Close()
	if err != nil {
		_ = outR.Close()
		return err
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	// The first line of stdout says the agent serves; the rest is read and
	// dropped so the agent never blocks on a full pipe.
	first := make(chan string, 1)
	go func() {
		defer outR.Close()
		defer close(first)
		sc := bufio.NewScanner(outR)
		if sc.Scan() {
			first <- sc.Text()
		}
		for sc.Scan() {
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()

	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	select {
	case line, ok := <-first:
		if ok && strings.HasPrefix(line, want) {
			a.proc = p
			return nil
		}
		kill(p)
		if !ok {
			return fmt.Errorf("leaseagent exited before it was ready (%v); its log ends:\n%s", p.cmd.ProcessState, a.LogTail(20))
		}
		return fmt.Errorf("leaseagent printed %q, want %q", line, want)
	case <-timeout.C:
		kill(p)
		return fmt.Errorf("leaseagent not ready within %v; its log ends:\n%s", readyTimeout, a.LogTail(20))
	}
}

// kill kills a process with SIGKILL and waits until it has exited.
func kill(p *agentProc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done // SIGKILL cannot be caught, even by a stopped process
}

// Kill kills the agent with SIGKILL (kill -9) and waits until it has
// exited.
func (a *Agent) Kill() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return errors.New("agent not running")
	}
	kill(a.proc)
	a.proc = nil
	return nil
}

// Stop stops the agent with SIGTERM, as an operator would, and waits until
// it has exited; it kills it if it takes longer than readyTimeout.
func (a *Agent) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return errors.New("agent not running")
	}
	p := a.proc
	a.proc = nil
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			return fmt.Errorf("agent stopped with %v", p.cmd.ProcessState)
		}
		return nil
	case <-t.C:
		kill(p)
		return fmt.Errorf("agent did not stop within %v of SIGTERM; killed", readyTimeout)
	}
}

// Restart starts the agent again on the same address and data directory,
// and waits until it serves.
func (a *Agent) Restart() error { return a.start() }

// Pause stops the agent with SIGSTOP.
func (a *Agent) Pause() error { return a.signal(syscall.SIGSTOP) }

// Resume continues a paused agent with SIGCONT.
func (a *Agent) Resume() error { return a.signal(syscall.SIGCONT) }

func (a *Agent) signal(sig os.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return errors.New("agent not running")
	}
	return a.proc.cmd.Process.Signal(sig)
}

// Close kills the agent if it runs and closes its log. Restart fails after
// Close.
func (a *Agent) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	if a.proc != nil {
		kill(a.proc)
		a.proc = nil
	}
	_ = a.log.Close()
}

// LogTail returns the last n lines the agent wrote to stderr, over all its
// incarnations.
func (a *Agent) LogTail(n int) string {
	data, err := os.ReadFile(a.log.Name())
	if err != nil {
		return fmt.Sprintf("(cannot read the agent's log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
