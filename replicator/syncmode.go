package replicator

import (
	"sync"
	"time"
)

// sync_mode: sync. Every fsync and fdatasync on the mount, once its events
// are durable in the log, waits in WaitReplicated until each replica has
// acknowledged them, that is, until each channel's cursor has passed them:
// the replica acknowledges a batch only once it is durable there.
//
// A replica that does not acknowledge within sync_timeout is not waited
// for any more: its channel is degraded, the mount's fsyncs go on at the
// speed of the local disk (the change is in the durable log and ships
// when the replica is back, as in async mode), and the log says so at
// error level. The channel returns to sync once it has caught up: it was
// acknowledged a batch that took everything durable when it was gathered.
// So a replica that is down costs the mail server one stall of
// sync_timeout, not one per delivery.

// ackState is what WaitReplicated waits on in a channel.
type ackState struct {
	mu       sync.Mutex
	seq      uint64        // the cursor: every event up to seq is durable on the replica
	moved    chan struct{} // closed and replaced whenever seq or degraded changes
	degraded bool          // sync mode: not waited for until it catches up
}

func newAckState(cursor uint64) *ackState {
	return &ackState{seq: cursor, moved: make(chan struct{})}
}

// changed wakes the waiters. Called with mu held.
func (a *ackState) changed() {
	close(a.moved)
	a.moved = make(chan struct{})
}

// WaitReplicated returns once every channel has acknowledged every event
// up to seq, or has been given up on: sync_timeout after the call began,
// a channel still behind is degraded (see above) and no longer waited for.
// It never fails: the events are durable in the log either way.
func (r *Replicator) WaitReplicated(seq uint64) {
	deadline := time.Now().Add(r.syncTimeout)
	for _, c := range r.channels {
		c.waitAcked(seq, deadline)
	}
}

// waitAcked waits until the channel has acknowledged seq, is degraded, or
// deadline passes, which degrades it.
func (c *Channel) waitAcked(seq uint64, deadline time.Time) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.acks.mu.Lock()
		if c.acks.seq >= seq || c.acks.degraded {
			c.acks.mu.Unlock()
			return
		}
		moved := c.acks.moved
		c.acks.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			c.degrade("the replica did not confirm a change within sync_timeout", seq)
			return
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-moved:
		case <-timer.C:
		}
	}
}

// degrade stops fsync from waiting for this channel until it catches up.
func (c *Channel) degrade(why string, seq uint64) {
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	if c.acks.degraded {
		return
	}
	c.acks.degraded = true
	c.acks.changed()
	c.logger.Error("sync_mode sync: "+why+"; fsync on the mount no longer waits for this replica, and mail is replicated asynchronously until it catches up",
		"channel", c.cfg.Name, "replica", c.cfg.Client.Addr, "seq", seq, "acknowledged", c.acks.seq)
}

// committed records that the cursor moved to seq: every event up to it is
// durable on the replica. drained says the batch took every event that was
// durable when it was gathered; a degraded channel that has such a batch
// acknowledged has caught up, and fsync waits for it again.
func (c *Channel) committed(seq uint64, drained bool) {
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	c.acks.seq = max(c.acks.seq, seq)
	if drained && c.acks.degraded {
		c.acks.degraded = false
		if c.syncMode {
			c.logger.Warn("sync_mode sync: the replica caught up; fsync on the mount waits for it again",
				"channel", c.cfg.Name, "replica", c.cfg.Client.Addr, "seq", c.acks.seq)
		}
	}
	c.acks.changed()
}

// syncState is the channel's sync mode for its status: "sync", "degraded",
// or "" in async mode.
func (c *Channel) syncState() string {
	if !c.syncMode {
		return ""
	}
	c.acks.mu.Lock()
	defer c.acks.mu.Unlock()
	if c.acks.degraded {
		return "degraded"
	}
	return "sync"
}
