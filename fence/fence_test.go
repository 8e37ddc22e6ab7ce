package fence

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEpochs(t *testing.T) {
	tree := t.TempDir()
	if s, err := Read(tree, Master); err != nil || s.Epoch != 0 || s.Role != Master {
		t.Fatalf("fresh tree: %v %v, want epoch 0 master", s, err)
	}
	if s, err := Init(tree, Replica); err != nil || s.Role != Replica {
		t.Fatalf("Init: %v %v", s, err)
	}
	s, err := Promote(tree)
	if err != nil || s.Epoch != 1 || s.Role != Master || s.Host == "" {
		t.Fatalf("Promote: %v %v, want epoch 1 master", s, err)
	}
	if _, err := Promote(tree); !errors.Is(err, ErrPromoted) {
		t.Errorf("second Promote: %v, want ErrPromoted", err)
	}
	if _, after, err := Adopt(tree, 1); err != nil || after.Role != Master {
		t.Errorf("Adopt of an epoch not above ours changed the tree: %v %v", after, err)
	}
	before, after, err := Adopt(tree, 5)
	if err != nil || before.Epoch != 1 || after.Epoch != 5 || after.Role != Replica {
		t.Errorf("Adopt(5): %v -> %v %v", before, after, err)
	}
	if s, _ := Read(tree, Master); s.Epoch != 5 || s.Role != Replica {
		t.Errorf("Read after Adopt: %v", s)
	}
	os.WriteFile(filepath.Join(tree, Dir, "epoch"), []byte("garbage"), 0o600)
	if _, err := Read(tree, Master); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged record: %v", err)
	}
}

func TestHold(t *testing.T) {
	tree := t.TempDir()
	release, err := Hold(tree, "first")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Hold(tree, "second"); err == nil || !strings.Contains(err.Error(), "first") {
		t.Errorf("second Hold: %v, want an error naming the holder", err)
	}
	release()
	release2, err := Hold(tree, "second")
	if err != nil {
		t.Fatalf("Hold after release: %v", err)
	}
	release2()
}

func TestReserved(t *testing.T) {
	for name, want := range map[string]bool{".spoolsync": true, ".spoolsync-quarantine": true, "user": false, ".spoolsyncx": false} {
		if Reserved(name) != want {
			t.Errorf("Reserved(%q) = %v", name, !want)
		}
	}
}

// FuzzParseRecord: whatever is in the epoch file, parsing never panics,
// and what it accepts round-trips through the writer's format.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("0 replica 0 -\n"))
	f.Add([]byte("7 master 1795882222 standby.example.org\n"))
	f.Add([]byte("18446744073709551615 master -1 x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseRecord(b)
		if err != nil {
			return
		}
		var sec int64
		if !s.Since.IsZero() {
			sec = s.Since.Unix()
		}
		again, err := parseRecord([]byte(fmt.Sprintf("%d %s %d %s\n", s.Epoch, s.Role, sec, s.Host)))
		if err != nil || again != s {
			t.Fatalf("%q: parsed %+v, re-encoded parses as %+v, %v", b, s, again, err)
		}
	})
}

// TestPromoteDoesNotWrap: a tree at the last epoch is not promoted (it
// would wrap to 0, fencing nobody), and no master can bring it past it.
func TestPromoteDoesNotWrap(t *testing.T) {
	tree := t.TempDir()
	if _, _, err := Adopt(tree, MaxEpoch+1); err == nil {
		t.Errorf("Adopt(2^64-1) succeeded")
	}
	if _, _, err := Adopt(tree, MaxEpoch); err != nil {
		t.Fatal(err)
	}
	if s, err := Promote(tree); err == nil || !strings.Contains(err.Error(), "cannot be promoted") {
		t.Errorf("Promote at the last epoch: %v %v, want a refusal", s, err)
	}
	if s, _ := Read(tree, Replica); s.Epoch != MaxEpoch || s.Role != Replica {
		t.Errorf("after the refused promote: %v", s)
	}
}
