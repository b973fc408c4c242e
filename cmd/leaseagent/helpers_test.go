package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 20 * time.Second

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// scanLines sends the lines read from r on the returned channel, and
// closes it at the end of r. It also copies them to copyTo, if not nil.
// Lines beyond the channel's buffer are dropped rather than block the
// writer.
func scanLines(r io.Reader, copyTo io.Writer) <-chan string {
	lines, _ := scanLinesToEnd(r, copyTo)
	return lines
}

// scanLinesToEnd is scanLines that also returns a channel closed once r has
// ended and every line has been copied to copyTo.
func scanLinesToEnd(r io.Reader, copyTo io.Writer) (<-chan string, <-chan struct{}) {
	lines := make(chan string, 1024)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if copyTo != nil {
				_, _ = io.WriteString(copyTo, sc.Text()+"\n")
			}
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	return lines, ended
}

// nextLine returns the next line from lines, failing the test if none comes
// within waitLimit or lines is closed.
func nextLine(t *testing.T, lines <-chan string, what string) string {
	t.Helper()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("%s: output ended", what)
		}
		return line
	case <-time.After(waitLimit):
		t.Fatalf("%s: no line within %v", what, waitLimit)
	}
	return ""
}

// lineContaining reads lines until one contains want, and returns it.
func lineContaining(t *testing.T, lines <-chan string, want string) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before a line containing %q", want)
			}
			if strings.Contains(line, want) {
				return line
			}
		case <-deadline:
			t.Fatalf("no line containing %q within %v", want, waitLimit)
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// envMap is a lookupEnv over a map.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}
