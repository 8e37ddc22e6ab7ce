// Package fence records which epoch owns a spool tree, so that after a
// failover the old master can never again write into the tree the new
// master serves, and two hosts never both act as master of one history.
//
// The state lives in the tree itself, in its reserved directory .spoolsync
// (hidden from the mail server by the mount, never replicated):
//
//	.spoolsync/epoch     "<epoch> <role> <unix seconds> <host>\n", role
//	                     "master" or "replica"; written by temp file,
//	                     fsync, rename, directory fsync
//	.spoolsync/lock      flock'ed by the one process using the tree:
//	                     `spoolsync mount` or `spoolsync server`
//	.spoolsync/epoch.lock flock'ed while the epoch is read and changed,
//	                     so two promotes cannot both win
//
// A tree without an epoch file is a fresh spool: epoch 0, master. A server
// takes a new root as a replica of epoch 0. `spoolsync promote` raises the
// epoch of a replica tree by one and makes it a master; its server, and
// any server that later sees a master of a higher epoch, refuses batches
// from lower epochs ("fenced"). A replica that meets a master of a higher
// epoch adopts it: that is failback, the old master becoming the new one's
// replica.
package fence

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/internal/durable"
)

// Dir is the tree's reserved directory.
const Dir = ".spoolsync"

// QuarantineDir holds, at the top of a tree, what a failback kept from the
// old master: QuarantineDir/<epoch>/<original path>.
const QuarantineDir = ".spoolsync-quarantine"

// Reserved reports whether a top-level name of a tree belongs to spoolsync
// (never the mail server's, never replicated).
func Reserved(name string) bool { return name == Dir || name == QuarantineDir }

// Roles a tree can have.
const (
	Master  = "master"
	Replica = "replica"
)

// State is a tree's epoch record.
type State struct {
	Epoch uint64
	Role  string
	Since time.Time // when the role or epoch last changed
	Host  string    // where that happened
}

func (s State) String() string {
	if s.Since.IsZero() {
		return fmt.Sprintf("epoch %d (%s)", s.Epoch, s.Role)
	}
	return fmt.Sprintf("epoch %d (%s since %s on %s)", s.Epoch, s.Role, s.Since.Format(time.RFC3339), s.Host)
}

// ErrPromoted: the tree is a master already.
var ErrPromoted = errors.New("already a master")

// Read returns the tree's state; a tree without one is fresh: epoch 0,
// with role def (Master for a spool being mounted, Replica for a server's
// root).
func Read(tree, def string) (State, error) {
	p := filepath.Join(tree, Dir, "epoch")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return State{Role: def}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("fence: %w", err)
	}
	s, err := parseRecord(b)
	if err != nil {
		return State{}, fmt.Errorf("fence: %s: %w (restore it, or write \"<epoch> replica 0 <host>\")", p, err)
	}
	return s, nil
}

// parseRecord decodes an epoch record: "<epoch> <role> <unix seconds> <host>\n".
func parseRecord(b []byte) (State, error) {
	f := strings.Fields(string(b))
	if len(f) != 4 || (f[1] != Master && f[1] != Replica) {
		return State{}, fmt.Errorf("damaged epoch record %q", b)
	}
	e, err1 := strconv.ParseUint(f[0], 10, 64)
	sec, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || sec < 0 {
		return State{}, fmt.Errorf("damaged epoch record %q", b)
	}
	s := State{Epoch: e, Role: f[1], Host: f[3]}
	if sec > 0 {
		s.Since = time.Unix(sec, 0)
	}
	return s, nil
}

// Promote makes a replica tree a master of the next epoch. It refuses a
// tree that is a master already (ErrPromoted): of two promotes, only the
// first wins.
func Promote(tree string) (State, error) {
	return update(tree, Replica, func(s State) (State, error) {
		if s.Role == Master {
			return s, fmt.Errorf("fence: %s is %s: %w", tree, s, ErrPromoted)
		}
		if s.Epoch >= MaxEpoch {
			// Wrapping to 0 would fence nobody while saying it did.
			return s, fmt.Errorf("fence: %s is at %s, the last epoch there is: it cannot be promoted (was that epoch adopted from a hostile master? inspect %s)", tree, s, filepath.Join(tree, Dir, "epoch"))
		}
		return stamp(State{Epoch: s.Epoch + 1, Role: Master}), nil
	})
}

// MaxEpoch is the highest epoch a tree can have: promoting it would
// overflow, so Promote refuses it, and no master may bring a tree to it.
const MaxEpoch = math.MaxUint64 - 1

// Adopt makes the tree a replica of epoch e, when e is above its own: a
// master of a newer epoch has connected (failback). It returns the state
// before and after. An e above MaxEpoch is refused. Whether a jump from
// the tree's epoch to e is plausible is the caller's policy.
func Adopt(tree string, e uint64) (before, after State, err error) {
	if e > MaxEpoch {
		return before, after, fmt.Errorf("fence: epoch %d is above the highest a tree may take (%d)", e, uint64(MaxEpoch))
	}
	after, err = update(tree, Replica, func(s State) (State, error) {
		before = s
		if e <= s.Epoch {
			return s, nil
		}
		return stamp(State{Epoch: e, Role: Replica}), nil
	})
	return before, after, err
}

// Init records the default state of a tree that has none, so the tree
// says what it is from its first use on.
func Init(tree, def string) (State, error) {
	return update(tree, def, func(s State) (State, error) { return s, nil })
}

func stamp(s State) State {
	s.Since = time.Now()
	s.Host, _ = os.Hostname()
	if s.Host == "" {
		s.Host = "unknown"
	}
	return s
}

// update reads, changes and writes the state under epoch.lock.
func update(tree, def string, change func(State) (State, error)) (State, error) {
	dir := filepath.Join(tree, Dir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return State{}, fmt.Errorf("fence: %w", err)
	}
	lk, err := os.OpenFile(filepath.Join(dir, "epoch.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return State{}, fmt.Errorf("fence: %w", err)
	}
	defer lk.Close()
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX); err != nil {
		return State{}, fmt.Errorf("fence: lock %s: %w", lk.Name(), err)
	}
	cur, err := Read(tree, def)
	if err != nil {
		return State{}, err
	}
	next, err := change(cur)
	if err != nil {
		return cur, err
	}
	_, statErr := os.Stat(filepath.Join(dir, "epoch"))
	if next == cur && statErr == nil {
		return cur, nil
	}
	host := next.Host
	if host == "" {
		host = "-"
	}
	var sec int64
	if !next.Since.IsZero() {
		sec = next.Since.Unix()
	}
	rec := fmt.Sprintf("%d %s %d %s\n", next.Epoch, next.Role, sec, host)
	if err := durable.WriteFile(filepath.Join(dir, "epoch"), []byte(rec), 0o600); err != nil {
		return cur, fmt.Errorf("fence: write the epoch of %s: %w", tree, err)
	}
	return next, nil
}

// Hold takes the tree for this process (`spoolsync mount`): the lock a
// `spoolsync server` of the same tree takes too, so a tree is never
// written by both. It fails, naming the holder, if it is taken.
func Hold(tree, who string) (release func(), err error) {
	dir := filepath.Join(tree, Dir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("fence: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		h := strings.TrimSpace(string(holder))
		if h == "" {
			h = "a spoolsync server"
		}
		return nil, fmt.Errorf("%s is in use by %s: a tree is served by one spoolsync process at a time (stop it first)", tree, h)
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("%s (pid %d)\n", who, os.Getpid())), 0)
	return func() { f.Truncate(0); f.Close() }, nil
}
