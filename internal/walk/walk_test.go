package walk

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
	"spoolsync/internal/testenv"
)

// opener opens directories below root by path, as the tests' Open.
func opener(root string) func(string) (int, error) {
	return func(dir string) (int, error) {
		return unix.Open(filepath.Join(root, dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
}

// randomTree makes a tree with deep and wide directories, a big directory,
// names that sort differently as bytes and as paths ("a", "a-b", "a/b"),
// symlinks and files.
func randomTree(t *testing.T, seed uint64) string {
	t.Helper()
	root := t.TempDir()
	r := rand.New(rand.NewPCG(seed, 1))
	names := []string{"a", "a-b", "a.b", "a0", "b", "Z", "cur", "new", "tmp", ".Sent", "é"}
	var mk func(dir string, depth int)
	mk = func(dir string, depth int) {
		for _, n := range names {
			p := filepath.Join(dir, n)
			switch k := r.IntN(6); {
			case depth < 4 && k < 2:
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				mk(p, depth+1)
			case k == 2:
				os.Symlink("../x", p)
			case k < 5:
				os.WriteFile(p, []byte(n), 0o644)
			}
		}
	}
	mk(root, 0)
	big := filepath.Join(root, "a", "big")
	os.MkdirAll(big, 0o755)
	for i := range bigDir*2 + 7 {
		os.WriteFile(filepath.Join(big, fmt.Sprint(i)), nil, 0o644)
	}
	return root
}

// want is what filepath.WalkDir reports below root, which defines the order.
func want(t *testing.T, root string) []string {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			paths = append(paths, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func TestOrderMatchesWalkDir(t *testing.T) {
	for seed := range uint64(4) {
		root := randomTree(t, seed)
		exp := want(t, root)
		for _, o := range []Options[unix.Stat_t]{{}, {Workers: 1, Ahead: 1}, {Workers: 3, Ahead: 2}, {Workers: 16, Ahead: 1000}} {
			o.Open = opener(root)
			// Detail runs in the readers, where Dir is open too.
			o.Detail = func(e *Entry[unix.Stat_t]) (unix.Stat_t, error) {
				var st unix.Stat_t
				err := unix.Fstatat(e.Dir, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW)
				return st, err
			}
			before := testenv.OpenFDs(t)
			var got []string
			err := Tree(".", o, func(e *Entry[unix.Stat_t]) error {
				var st unix.Stat_t
				if err := unix.Fstatat(e.Dir, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return fmt.Errorf("%s: Dir does not hold Name: %w", e.Path, err)
				}
				if st.Ino != e.Stat.Ino || e.DetailErr != nil || e.Detail.Ino != st.Ino {
					return fmt.Errorf("%s: stat or detail of another file (%v)", e.Path, e.DetailErr)
				}
				got = append(got, e.Path)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(exp, "\n") {
				t.Fatalf("seed %d, %+v: order differs from WalkDir:\n got %d entries\nwant %d", seed, o, len(got), len(exp))
			}
			if after := testenv.OpenFDs(t); after != before {
				t.Errorf("open fds: %d before, %d after", before, after)
			}
		}
	}
}

func TestSubtreeAndSkip(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"u/bob/cur/1", "u/bob/new/2", "u/amy/cur/3", ".spoolsync/x"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), nil, 0o644)
	}
	var got []string
	err := Tree(".", Options[any]{Open: opener(root), Skip: func(p string) bool { return p == ".spoolsync" || p == "u/amy" }},
		func(e *Entry[any]) error { got = append(got, e.Path); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if w := "u u/bob u/bob/cur u/bob/cur/1 u/bob/new u/bob/new/2"; strings.Join(got, " ") != w {
		t.Errorf("got %q, want %q", got, w)
	}
	got = nil
	if err := Tree("u/bob", Options[any]{Open: opener(root)}, func(e *Entry[any]) error { got = append(got, e.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if w := "u/bob/cur u/bob/cur/1 u/bob/new u/bob/new/2"; strings.Join(got, " ") != w {
		t.Errorf("subtree: got %q, want %q", got, w)
	}
}

// TestStopsAndCloses: an error from fn ends the walk, is returned, and
// leaves no descriptor open, also for directories read ahead.
func TestStopsAndCloses(t *testing.T) {
	root := randomTree(t, 9)
	stop := errors.New("stop")
	for n := range 40 {
		before := testenv.OpenFDs(t)
		seen := 0
		err := Tree(".", Options[any]{Open: opener(root), Workers: 4, Ahead: 8}, func(e *Entry[any]) error {
			if seen == n {
				return stop
			}
			seen++
			return nil
		})
		if err != stop {
			t.Fatalf("after %d entries: %v, want the fn's error", n, err)
		}
		if after := testenv.OpenFDs(t); after != before {
			t.Fatalf("after %d entries: open fds %d before, %d after", n, before, after)
		}
	}
}

// TestVanishing: a directory removed or replaced by a symlink while the
// walk runs is reported as it was listed and visited as empty; an open
// error other than that is returned.
func TestVanishing(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/x", "b/y", "c/z"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	var got []string
	err := Tree(".", Options[any]{Open: opener(root), Workers: 1, Ahead: 1}, func(e *Entry[any]) error {
		got = append(got, e.Path)
		if e.Path == "a" {
			// Too late for a and b if they were read ahead; c is
			// read by the visitor or a worker after this.
			os.RemoveAll(filepath.Join(root, "c"))
			os.Symlink("a", filepath.Join(root, "c"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != "a" || len(got) < 4 {
		t.Errorf("got %q", got)
	}
	boom := errors.New("boom")
	err = Tree(".", Options[any]{Open: func(d string) (int, error) {
		if d == "b" {
			return -1, boom
		}
		return opener(root)(d)
	}}, func(e *Entry[any]) error { return nil })
	if !errors.Is(err, boom) {
		t.Errorf("open error: got %v", err)
	}
}

// TestPrepareAheadOfDetail: Prepare sees every entry once, before Detail;
// what it leaves in e.Detail reaches Detail; and in a directory of up to
// prepareChunk entries every Prepare comes before the first Detail, which
// is what lets a resync's reads of one directory's files overlap.
func TestPrepareAheadOfDetail(t *testing.T) {
	root := randomTree(t, 3)
	var seq atomic.Int64
	var mu sync.Mutex
	prep, det := map[string]int64{}, map[string]int64{}
	opts := Options[int64]{
		Open: opener(root),
		Prepare: func(e *Entry[int64]) {
			e.Detail = seq.Add(1)
			mu.Lock()
			defer mu.Unlock()
			if _, twice := prep[e.Path]; twice {
				t.Errorf("%s prepared twice", e.Path)
			}
			prep[e.Path] = e.Detail
		},
		Detail: func(e *Entry[int64]) (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			if p, ok := prep[e.Path]; !ok || p != e.Detail {
				t.Errorf("%s: Detail found %d, Prepare left %d (prepared: %v)", e.Path, e.Detail, p, ok)
			}
			det[e.Path] = seq.Add(1)
			return e.Detail, nil
		},
	}
	var paths []string
	err := Tree(".", opts, func(e *Entry[int64]) error { paths = append(paths, e.Path); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if w := want(t, root); !slices.Equal(paths, w) {
		t.Fatalf("visited %d entries, want %d", len(paths), len(w))
	}
	byDir := map[string][]string{}
	for _, p := range paths {
		byDir[filepath.Dir(p)] = append(byDir[filepath.Dir(p)], p)
		if prep[p] == 0 || det[p] <= prep[p] {
			t.Errorf("%s: prepared at %d, detailed at %d", p, prep[p], det[p])
		}
	}
	checked := 0
	for dir, ps := range byDir {
		if len(ps) > prepareChunk {
			continue
		}
		lastPrep, firstDet := int64(0), int64(1<<62)
		for _, p := range ps {
			lastPrep, firstDet = max(lastPrep, prep[p]), min(firstDet, det[p])
		}
		if lastPrep > firstDet {
			t.Errorf("%s: a Detail (%d) ran before the directory's last Prepare (%d)", dir, firstDet, lastPrep)
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("only %d directories checked; the tree is too small", checked)
	}
}
