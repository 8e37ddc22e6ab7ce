package replicator

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// owes says what work the channel owes the replica beyond its backlog —
// a resync asked for and not yet done (of a failback or first contact, of
// the paths a batch's skipped ops touched, of a replayed batch's
// directories, of the directories a rescan found changed) — and since
// when: "" when none. The markers on disk are the truth (they survive a
// restart); the time is that of the first request not yet carried out.
func (c *Channel) owes() (string, time.Time) {
	c.markerMu.Lock()
	defer c.markerMu.Unlock()
	if st, err := os.Stat(c.failbackMarker()); err == nil {
		return "a resync of the whole tree (first contact or failback)", st.ModTime()
	}
	b, err := os.ReadFile(c.resyncMarker())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("a resync (its request %s cannot be read: %v)", c.resyncMarker(), err), time.Now()
		}
		return "", time.Time{}
	}
	since := c.owesSince
	if since.IsZero() {
		if st, err := os.Stat(c.resyncMarker()); err == nil {
			since = st.ModTime()
		}
	}
	dirs, whole := decodeResyncMarker(b)
	if whole {
		return "a resync of the whole tree", since
	}
	const shown = 3
	list := strings.Join(dirs[:min(len(dirs), shown)], ", ")
	if len(dirs) > shown {
		list += fmt.Sprintf(" and %d more", len(dirs)-shown)
	}
	return fmt.Sprintf("a resync of %d paths (%s)", len(dirs), list), since
}
