package replicator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/internal/durable"

	"spoolsync/guid"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// Replicator runs one Channel per replica inside the mount process.
type Replicator struct {
	log         *synclog.Log
	cache       *guid.Cache
	channels    []*Channel
	logger      *slog.Logger
	syncTimeout time.Duration            // sync_mode sync: see WaitReplicated
	verifiers   map[*Channel]*verifier   // continuous verification (verify.go); empty when off
	lagSeconds  *prometheus.HistogramVec // see metrics.go
}

// Options are what every channel shares.
type Options struct {
	Backing  string    // the spool's backing directory: content is read here, never through the mount
	StateDir string    // for the GUID cache
	GUIDMode guid.Mode // guid_mode
	Logger   *slog.Logger
	// SyncTimeout is sync_timeout in sync_mode sync: how long an fsync
	// waits in WaitReplicated for a replica before it is degraded. Zero
	// is async mode, where nothing calls WaitReplicated.
	SyncTimeout time.Duration
	// VerifyInterval is sync_verify_interval: how often each channel's
	// replica is compared with the master (verify.go); 0 is never.
	VerifyInterval time.Duration
	// VerifyReport is sync_verify report: differences are counted and
	// logged, not repaired.
	VerifyReport bool
	// MaxFileSize is max_file_size: a bigger file is not hashed or
	// shipped; its batch fails with an error naming it. 0 = no limit.
	MaxFileSize int64
}

// New prepares the channels; Run starts them.
func New(lg *synclog.Log, opts Options, channels []ChannelConfig) (*Replicator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cache, err := guid.OpenCache(opts.StateDir + "/guid-cache.db")
	if err != nil {
		return nil, fmt.Errorf("replicator: GUID cache: %w", err)
	}
	id, err := logID(lg.Dir())
	if err != nil {
		cache.Close()
		return nil, err
	}
	r := &Replicator{log: lg, cache: cache, logger: opts.Logger, syncTimeout: opts.SyncTimeout, lagSeconds: newLagHistogram()}
	res := &resolver{backing: opts.Backing, cache: cache, mode: opts.GUIDMode, maxFile: opts.MaxFileSize}
	for _, cc := range channels {
		ps, err := openPending(lg.Dir(), cc.Name)
		if err != nil {
			cache.Close()
			return nil, err
		}
		cursor, err := lg.Cursor(cc.Name)
		if err != nil {
			cache.Close()
			return nil, err
		}
		ah, err := openAhead(lg.Dir(), cc.Name)
		if err != nil {
			cache.Close()
			return nil, err
		}
		r.channels = append(r.channels, &Channel{cfg: cc, wireName: cc.Name + "@" + id, log: lg, res: res, logger: opts.Logger, pending: ps, ahead: ah,
			acks: newAckState(cursor), syncMode: opts.SyncTimeout > 0,
			st: ChannelStatus{Name: cc.Name, Replica: cc.Client.Addr, Epoch: cc.Client.Epoch}, lag: r.lagSeconds.WithLabelValues(cc.Name)})
	}
	r.newVerifiers(opts.VerifyInterval, opts.VerifyReport)
	return r, nil
}

// logID returns the identity of the sync log in dir, creating it with the
// log: 16 random hex digits in dir/log-id.
func logID(dir string) (string, error) {
	p := filepath.Join(dir, "log-id")
	b, err := os.ReadFile(p)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("replicator: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := durable.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("replicator: save the log identity: %w", err)
	}
	return id, nil
}

// ResyncDirs has every channel resync these subtrees (deleting on the
// replica what the master lacks there) before its next batch: after an
// unclean stop, the directories changed since the last checkpoint may hold
// a rename or unlink whose event was lost. The request is kept on disk
// until done. Nil or "." means the whole tree.
func (r *Replicator) ResyncDirs(dirs []string) error {
	for _, c := range r.channels {
		if err := c.askResync(dirs); err != nil {
			return err
		}
	}
	return nil
}

// Close releases a Replicator that will not Run.
func (r *Replicator) Close() error { return r.cache.Close() }

// Run ships on every channel until ctx is done, then closes the cache.
func (r *Replicator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	closeVerify := r.startVerifiers(ctx, &wg)
	for _, c := range r.channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx)
		}()
	}
	wg.Wait()
	closeVerify()
	r.cache.Close()
}

// ChannelStatus is what `spoolsync status` shows of a channel.
type ChannelStatus struct {
	Name          string    `json:"channel"`
	Replica       string    `json:"replica"`
	Connected     bool      `json:"connected"`
	Since         time.Time `json:"since,omitzero"`
	TLS           bool      `json:"tls"`
	Compressed    bool      `json:"compressed"`
	Fenced        bool      `json:"fenced,omitempty"`    // the replica was promoted: nothing ships
	SyncMode      string    `json:"sync_mode,omitempty"` // sync_mode sync: "sync", or "degraded" (fsync does not wait for it); "" in async mode
	Epoch         uint64    `json:"epoch"`               // this master's
	Quarantined   int       `json:"quarantined"`         // files failback moved to the replica's quarantine
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	ShippedSeq    uint64    `json:"shipped_seq"`
	LastSeq       uint64    `json:"last_seq"`
	BacklogEvents uint64    `json:"backlog_events"`
	LagSeconds    float64   `json:"lag_seconds"`
	Batches       uint64    `json:"batches"`
	Events        uint64    `json:"events"`
	Ops           uint64    `json:"ops"`
	PayloadBytes  int64     `json:"payload_bytes"`
	ContentBytes  int64     `json:"content_bytes_sent"`
	WireBytes     int64     `json:"wire_bytes"`
	DedupHits     uint64    `json:"dedup_hits"`
	LastAck       time.Time `json:"last_ack,omitzero"`
	LastBatchTime float64   `json:"last_batch_seconds"`

	// InSync: backlog 0, no resync owed, and the last verify found
	// nothing. Otherwise Owes says what the channel owes, and how old.
	InSync          bool      `json:"in_sync"`
	Owes            []string  `json:"owes,omitempty"`
	VerifiedAt      time.Time `json:"verified_at,omitzero"`     // end of the last completed verify
	VerifySeconds   float64   `json:"verify_seconds,omitempty"` // how long it took
	DivergedEntries int       `json:"diverged_entries"`         // differences it found
	DivergedPaths   []string  `json:"diverged_paths,omitempty"` // the first 100 of them
	Repaired        uint64    `json:"repaired_entries"`         // differences resynced since the start
	VerifyError     string    `json:"verify_error,omitempty"`   // why the last attempt failed
	// ResyncOwed is the resync the channel owes the replica beyond its
	// backlog (see owes), "" when none; it is also among Owes.
	ResyncOwed string `json:"resync_owed,omitempty"`
	// NoAnswerSeconds: the replica stopped answering (heartbeat): how
	// long ago it was last heard. 0 while it answers.
	NoAnswerSeconds float64 `json:"no_answer_seconds,omitempty"`
}

func (c *Channel) connected(s wire.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Connected, c.st.Since, c.st.TLS, c.st.Compressed, c.st.Fenced = true, time.Now(), s.TLS, s.Compressed, false
	c.peer = s
	c.noAnswer = false
}

func (c *Channel) setError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Connected = false
	c.st.Fenced = errors.Is(err, wire.ErrFenced)
	// Silent until a session gets through again (connected): a replica
	// that went silent and now refuses connections or stalls in the
	// handshake still has not answered.
	var na *errNoAnswer
	c.noAnswer = c.noAnswer || errors.As(err, &na)
	if err != nil {
		c.st.LastError, c.st.LastErrorTime = err.Error(), time.Now()
	}
}

func (c *Channel) acked(seq uint64, events int, st batchStats, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.ShippedSeq = seq
	c.st.Batches++
	c.st.Events += uint64(events)
	c.st.Ops += uint64(st.ops)
	c.st.PayloadBytes += st.payload
	c.st.ContentBytes += st.sent
	c.st.DedupHits += uint64(st.dedup)
	c.st.LastAck = time.Now()
	c.st.LastBatchTime = took.Seconds()
}

// Status reports every channel. Lag is the age of the oldest event the
// replica has not acknowledged.
func (r *Replicator) Status() []ChannelStatus {
	last := r.log.LastSeq()
	out := make([]ChannelStatus, 0, len(r.channels))
	for _, c := range r.channels {
		c.mu.Lock()
		st := c.st
		if c.noAnswer && !st.Connected {
			st.NoAnswerSeconds = time.Since(time.Unix(0, c.heard.Load())).Seconds()
		}
		c.mu.Unlock()
		st.WireBytes = c.wireBytes.Load()
		st.SyncMode = c.syncState()
		cursor, _ := r.log.Cursor(c.cfg.Name)
		st.ShippedSeq, st.LastSeq = cursor, last
		if last > cursor {
			st.BacklogEvents = last - cursor
			st.LagSeconds = r.age(cursor + 1)
		}
		var owedSince time.Time
		st.ResyncOwed, owedSince = c.owes()
		r.verifyStatus(c, &st, owedSince)
		out = append(out, st)
	}
	return out
}

// age is how long ago event seq was logged.
func (r *Replicator) age(seq uint64) float64 {
	rd, err := r.log.NewReader(seq)
	if err != nil {
		return 0
	}
	defer rd.Close()
	ev, err := rd.TryNext()
	if err != nil || ev == nil {
		return 0 // not durable yet: less than a flush interval old
	}
	return time.Since(time.Unix(0, ev.Time)).Seconds()
}
