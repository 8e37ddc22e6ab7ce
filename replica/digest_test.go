package replica

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"

	"spoolsync/digest"
	"spoolsync/guid"
)

// TestDigestConfined: a digest request never lists or hashes anything
// outside the root: not through a symlink (out of the root or within it),
// not by "..", not the reserved .spoolsync; the root's listing leaves the
// reserved names out.
func TestDigestConfined(t *testing.T) {
	tc := newTestCase(t)
	ctx := context.Background()
	tc.write("user/bob/cur/1", "mail")
	must(t, os.Symlink(tc.outside, tc.path("evil")))
	must(t, os.Symlink("user", tc.path("inlink")))
	for _, p := range []string{"evil", "evil/sub", "inlink", "inlink/bob"} {
		d, err := tc.s.Digest(ctx, p, guid.SHA256)
		if err == nil {
			t.Errorf("digest of %s (through a symlink): listed %+v", p, d)
		} else if p == "evil" && !errors.Is(err, digest.ErrNotDir) {
			t.Errorf("digest of the symlink %s: %v, want not a directory", p, err)
		}
	}
	for _, p := range []string{"../outside", "user/../../outside", "/tmp", ".spoolsync", ".spoolsync/tmp"} {
		if d, err := tc.s.Digest(ctx, p, guid.SHA256); !errors.Is(err, ErrBadPath) {
			t.Errorf("digest of %q: %+v, %v; want refused as a bad path", p, d, err)
		}
	}
	if _, err := tc.s.Digest(ctx, "user/nobody", guid.SHA256); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("digest of a missing dir: %v, want not-exist", err)
	}
	root, err := tc.s.Digest(ctx, "", guid.SHA256)
	must(t, err)
	var names []string
	for _, e := range root.Entries {
		names = append(names, e.Name)
	}
	if len(names) != 3 || names[0] != "evil" || names[1] != "inlink" || names[2] != "user" {
		t.Errorf("root listing %q, want evil, inlink, user (no .spoolsync)", names)
	}
	// The symlinks are entries (their targets are hashed as strings), and
	// nothing outside changes the digest.
	before := root.Digest
	must(t, os.WriteFile(tc.outside+"/sub/y", []byte("changed"), 0o644))
	again, err := tc.s.Digest(ctx, "", guid.SHA256)
	must(t, err)
	if again.Digest != before {
		t.Error("a change outside the root changed the root's digest")
	}
}
