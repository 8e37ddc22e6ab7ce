package testenv

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// Buffer is an io.Writer safe for concurrent use: a process's or a
// logger's output that a test reads while it is still being written.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// PollInterval is how often Eventually asks again.
const PollInterval = 20 * time.Millisecond

// Eventually waits until cond holds, asking every PollInterval. After
// timeout it fails the test, saying what it waited for: a test that
// synchronises by waiting for a state never passes by luck of timing, and
// one whose state never comes says so instead of going on silently.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		}
		time.Sleep(PollInterval)
	}
}
