package chaos

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// echoServer accepts connections and echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// roundTrip sends a line through conn and returns what came back.
func roundTrip(conn net.Conn, line string) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestProxy(t *testing.T) {
	p := newProxy(t, echoServer(t))

	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v; want hello", got, err)
	}

	// Delay holds each direction.
	const d = 100 * time.Millisecond
	p.Delay(d)
	start := time.Now()
	if got, err := roundTrip(c, "slow"); err != nil || got != "slow" {
		t.Fatalf("delayed: %q, %v", got, err)
	}
	if took := time.Since(start); took < 2*d {
		t.Errorf("delayed round trip took %v, want at least %v", took, 2*d)
	}
	p.Delay(0)

	// Cut closes the connection and refuses new ones.
	p.Cut()
	if _, err := roundTrip(c, "cut"); err == nil {
		t.Error("a cut connection still carried data")
	}
	refused := dial(t, p.Addr())
	if _, err := roundTrip(refused, "refused"); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection made while cut: %v, want it closed", err)
	}

	// Restore lets new connections through.
	p.Restore()
	if got, err := roundTrip(dial(t, p.Addr()), "again"); err != nil || got != "again" {
		t.Fatalf("after restore: %q, %v", got, err)
	}
}

func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := newProxy(t, target)
	if _, err := roundTrip(dial(t, p.Addr()), "anyone"); err == nil {
		t.Error("a connection to a dead target carried data")
	}
}

func TestProxyCloseEndsConnections(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "x"); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil { // waits for every goroutine
		t.Fatal(err)
	}
	if _, err := roundTrip(c, "y"); err == nil {
		t.Error("connection still open after Close")
	}
}
