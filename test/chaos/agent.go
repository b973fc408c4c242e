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
	addr         string   // 127.0.0.1:port, kept across restarts
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

// StartAgent starts `bin --listen 127.0.0.1:<free port> --data-dir dataDir`
// with environment env, its stderr appended to logPath, and waits until it
// says it serves.
func StartAgent(bin, dataDir, logPath string, env []string) (*Agent, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	a := &Agent{bin: bin, dataDir: dataDir, env: env, log: log}
	for attempt := 1; ; attempt++ {
		if a.addr, err = freeAddr(); err == nil {
			err = a.start()
		}
		if err == nil {
			return a, nil
		}
		if attempt == 3 || !strings.Contains(a.LogTail(5), "address already in use") {
			_ = log.Close()
			return nil, err
		}
		// Someone took the port between freeAddr and the agent: try another.
	}
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
	cmd := exec.Command(a.bin, "--listen", a.addr, "--data-dir", a.dataDir)
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

	want := fmt.Sprintf("leaseagent listening on nats://%s (embedded, data in %s)", a.addr, a.dataDir)
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	select {
	case line, ok := <-first:
		if ok && line == want {
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
