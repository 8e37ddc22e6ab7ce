package server

import (
	"net"
	"sync"
	"time"
)

// Defaults of what unauthenticated peers may take (Options).
const (
	DefaultMaxHandshakes        = 256
	DefaultMaxHandshakesPerAddr = 8
	// DefaultFreeFailures failed logins in a row from one address cost
	// nothing more than the failure delay (typos, a rotated password, an
	// operator trying things); each one after that doubles the address's
	// wait before it may try again, from one second up to
	// DefaultMaxLoginBackoff.
	DefaultFreeFailures    = 10
	DefaultMaxLoginBackoff = 5 * time.Minute
)

// guard bounds what a peer that has not authenticated can take from the
// server: connections still in the handshake, in total and per source
// address (each holds buffers, a goroutine and, with PLAIN, a bcrypt
// check), and, for an address whose logins keep failing, a growing wait
// during which its connections are closed at once, before any password is
// checked. A successful login from an address clears its record.
//
// An address with a failed login not yet cleared by a success is
// suspect: suspect addresses together hold at most three quarters of the
// handshake slots, so that a flood from many addresses cannot lock a
// master out. A connection from an address that is not suspect and has no
// other connection in the handshake (a master logs in once) is urgent:
// its password check goes before the others queued (Passwords.Check), so
// it waits at most for the checks running.
//
// Addresses are IPs (IPv6: their /64): the port of each connection
// differs. Connections
// without an IP (net.Pipe, Unix sockets) count only towards the total.
type guard struct {
	maxTotal, maxPerAddr int
	freeFailures         int
	maxBackoff           time.Duration
	now                  func() time.Time

	mu      sync.Mutex
	total   int
	suspect int // of total, from suspect addresses
	perAddr map[string]int
	fails   map[string]*failures
}

type failures struct {
	n     int
	until time.Time // connections before this are refused
	last  time.Time
}

func newGuard(o *Options) *guard {
	return &guard{maxTotal: o.MaxHandshakes, maxPerAddr: o.MaxHandshakesPerAddr,
		freeFailures: o.FreeFailures, maxBackoff: o.MaxLoginBackoff, now: time.Now,
		perAddr: map[string]int{}, fails: map[string]*failures{}}
}

// sourceIP is the key of a connection's source: its IPv4 address, or the
// /64 of its IPv6 address (one host's share, which it can fill with as
// many addresses as it likes); "" when it has no IP.
func sourceIP(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Why admit refused a connection.
const (
	refusedTotal   = "too many connections in the handshake"
	refusedPerAddr = "too many connections in the handshake from this address"
	refusedBackoff = "too many failed logins from this address; waiting"
)

// admit takes a handshake slot for a connection from ip; done must be
// called once the handshake is over. On refusal it says why. urgent: see
// guard.
func (g *guard) admit(ip string) (done func(), urgent bool, refused string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.fails[ip]
	suspect := ip != "" && f != nil
	if suspect && g.now().Before(f.until) {
		return nil, false, refusedBackoff
	}
	if g.total >= g.maxTotal || suspect && g.suspect >= g.maxTotal-g.maxTotal/4 {
		return nil, false, refusedTotal
	}
	if ip != "" && g.perAddr[ip] >= g.maxPerAddr {
		return nil, false, refusedPerAddr
	}
	urgent = !suspect && g.perAddr[ip] == 0
	g.total++
	if suspect {
		g.suspect++
	}
	if ip != "" {
		g.perAddr[ip]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.total--
			if suspect {
				g.suspect--
			}
			if ip != "" {
				if g.perAddr[ip]--; g.perAddr[ip] == 0 {
					delete(g.perAddr, ip)
				}
			}
		})
	}, urgent, ""
}

// failed records a failed login from ip and returns how long the address
// must now wait (0 while it has free failures left).
func (g *guard) failed(ip string) time.Duration {
	if ip == "" {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.prune(now)
	f := g.fails[ip]
	if f == nil {
		if len(g.fails) >= maxFailRecords {
			return 0 // the semaphore on password checks still holds
		}
		f = &failures{}
		g.fails[ip] = f
	}
	f.n++
	f.last = now
	if f.n <= g.freeFailures {
		return 0
	}
	wait := g.maxBackoff
	if k := f.n - g.freeFailures - 1; k < 30 {
		wait = min(time.Second<<k, g.maxBackoff)
	}
	f.until = now.Add(wait)
	return wait
}

// succeeded forgets ip's failures.
func (g *guard) succeeded(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.fails, ip)
}

// maxFailRecords bounds the failure table (a few MiB at most).
const maxFailRecords = 1 << 16

// prune forgets addresses that have not failed for a while, so that the
// table stays small whatever the number of addresses an attacker uses.
func (g *guard) prune(now time.Time) {
	if len(g.fails) < 4096 {
		return
	}
	for ip, f := range g.fails {
		if now.Sub(f.last) > 2*g.maxBackoff && now.After(f.until) {
			delete(g.fails, ip)
		}
	}
}
