package chaos

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from its own address to a target, and can
// cut them or delay what they carry: the network faults of a run.
type Proxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds added to everything forwarded

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}

	wg sync.WaitGroup // the accept loop and every connection's goroutines
}

// NewProxy listens on a free port of 127.0.0.1 and forwards every
// connection to target (host:port).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the host:port clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.closeAll()
}

// Restore accepts connections again after Cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Delay holds everything read from either side for d before forwarding it,
// from now on; zero forwards at once. Order is kept.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops listening, closes every connection and waits for the
// forwarding goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.ln.Close()
	p.closeAll()
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// closeAll closes the connections; p.mu must be held.
func (p *Proxy) closeAll() {
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // a failed handshake; keep serving
		}
		p.wg.Add(1)
		go p.serve(down)
	}
}

// serve connects a client to the target and forwards both ways until
// either side closes or the proxy cuts them.
func (p *Proxy) serve(down net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		_ = down.Close() // the target is down: so is the client's connection
		return
	}
	p.mu.Lock()
	if p.cut || p.closed {
		p.mu.Unlock()
		_ = down.Close()
		_ = up.Close()
		return
	}
	p.conns[down], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()

	var pipes sync.WaitGroup
	pipes.Go(func() { p.pipe(up, down) })
	pipes.Go(func() { p.pipe(down, up) })
	pipes.Wait()

	p.mu.Lock()
	delete(p.conns, down)
	delete(p.conns, up)
	p.mu.Unlock()
}

// chunk is data read from one side, to be written to the other at a time.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst, holding each chunk for the delay in force when
// it was read. When either side fails it closes both, which ends the other
// direction's pipe too.
func (p *Proxy) pipe(dst, src net.Conn) {
	chunks := make(chan chunk, 64)
	var writer sync.WaitGroup
	writer.Go(func() {
		failed := false
		for c := range chunks {
			if failed {
				continue // drain, so the reader never blocks
			}
			if wait := time.Until(c.at); wait > 0 {
				time.Sleep(wait) // the injected delay
			}
			if _, err := dst.Write(c.data); err != nil {
				failed = true
				_ = src.Close()
				_ = dst.Close()
			}
		}
	})
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunks <- chunk{data: append([]byte(nil), buf[:n]...), at: time.Now().Add(time.Duration(p.delay.Load()))}
		}
		if err != nil {
			break
		}
	}
	close(chunks)
	writer.Wait()
	_ = src.Close()
	_ = dst.Close()
}
