package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"spoolsync/fence"
	"spoolsync/internal/treecmp"
	"spoolsync/replicator"
)

// host is one machine of a failover test: a tree that is served as a
// replica or mounted as a spool, with its own state and configuration.
type host struct {
	name string
	tree string // the backing dir when master, the root when replica
	env  *env   // master side: mount point, state, config
	rep  *replicaEnv
}

func newHost(t *testing.T, name string) *host {
	t.Helper()
	r := newReplicaEnv(t, "")
	h := &host{name: name, tree: r.root, rep: r}
	h.env = &env{dir: r.dir, backing: r.root, mnt: filepath.Join(r.dir, "mnt"), state: filepath.Join(r.dir, "mstate"), conf: filepath.Join(r.dir, "master.conf")}
	must(t, os.MkdirAll(h.env.mnt, 0o755))
	return h
}

// masterOf writes h's master configuration, replicating to addr.
func (h *host) masterOf(t *testing.T, addr string) {
	t.Helper()
	must(t, os.WriteFile(h.env.conf, []byte(fmt.Sprintf("spool_dir: %s\nmount_point: %s\nstate_dir: %s\nsync_host: %s\nsync_authname: master\nsync_password: pw\n",
		h.tree, h.env.mnt, h.env.state, addr)), 0o644))
}

// messages lists the message files of a tree below user dirs (not the
// quarantine), by base name.
func messages(t *testing.T, tree string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(tree, p)
		if d.IsDir() && fence.Reserved(rel) {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && (strings.Contains(rel, "/new/") || strings.Contains(rel, "/cur/")) {
			out[filepath.Base(p)] = rel
		}
		return nil
	})
	return out
}

// TestFailoverDrill: deliver with rolling replication; stop the replica's
// server so some mail is only on the master; SIGKILL the master's mount;
// promote the standby; mount it and deliver there; bring the old master
// back as a server; let it converge. Every message delivered anywhere is in
// both final trees or in the old master's quarantine; nothing is lost, and
// nothing is duplicated in the live trees.
func TestFailoverDrill(t *testing.T) {
	a, b := newHost(t, "a"), newHost(t, "b")
	// b serves as the standby; a is the master.
	bServer, bAddr := startServer(t, b.rep)
	a.masterOf(t, bAddr)
	aMount := startMount(t, a.env)
	md := filepath.Join(a.env.mnt, "user", "Maildir")
	mkMaildir(t, md)
	delivered := map[string]bool{}
	put := func(mnt string, name string) {
		deliver(t, filepath.Join(mnt, "user", "Maildir"), name, message(len(delivered)))
		delivered[name] = true
	}
	for i := 0; i < 20; i++ {
		put(a.env.mnt, fmt.Sprintf("a%d.host", i))
	}
	(&pair{m: a.env, r: b.rep, mount: aMount}).waitSynced(t)

	// The standby's server stops; mail keeps arriving on a only.
	bServer.stop(t, syscall.SIGTERM)
	for i := 20; i < 30; i++ {
		put(a.env.mnt, fmt.Sprintf("a%d.host", i))
	}
	// The master dies.
	aMount.cmd.Process.Kill()
	<-aMount.done
	detach(a.env.mnt)

	// Promote the standby and make it the master, replicating to a.
	out, err := exec.Command(binary, "promote", "--root", b.tree).CombinedOutput()
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	aServer, aAddr := startServer(t, a.rep) // the old master comes back as a replica
	b.masterOf(t, aAddr)
	bMount := startMount(t, b.env)
	for i := 0; i < 10; i++ {
		put(b.env.mnt, fmt.Sprintf("b%d.host", i))
	}
	(&pair{m: b.env, r: a.rep, mount: bMount}).waitSynced(t)
	_ = aServer

	live := messages(t, b.tree)
	if d, err := treecmp.Diff(b.tree, a.tree, treecmp.Options{Skip: []string{fence.Dir, fence.QuarantineDir}, DirMtimes: true}); err != nil || len(d) > 0 {
		t.Fatalf("trees differ after failback: %v\n%s", err, strings.Join(d, "\n"))
	}
	quarantined := messages(t, filepath.Join(a.tree, fence.QuarantineDir))
	for name := range delivered {
		_, inLive := live[name]
		_, inQ := quarantined[name]
		if !inLive && !inQ {
			t.Errorf("message %s was lost: neither in the live trees nor in the quarantine", name)
		}
		if inLive && inQ {
			t.Errorf("message %s is both live and quarantined", name)
		}
	}
	if len(quarantined) == 0 {
		t.Error("nothing was quarantined, but mail arrived on the old master while the standby was down")
	}
	t.Logf("%d delivered: %d live, %d quarantined", len(delivered), len(live), len(quarantined))

	// Re-deliver the quarantined mail through the new master's mount.
	out, err = exec.Command(binary, "quarantine", "restore", "--root", a.tree, "--into", b.env.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("quarantine restore: %v\n%s", err, out)
	}
	(&pair{m: b.env, r: a.rep, mount: bMount}).waitSynced(t)
	for name := range delivered {
		if _, ok := messages(t, a.tree)[name]; !ok {
			t.Errorf("message %s missing after the restore", name)
		}
	}
}

// TestFencing: a stale master that reconnects after the promotion is
// refused and changes nothing; the mount keeps serving and says FENCED;
// two concurrent promotes do not both win.
func TestFencing(t *testing.T) {
	a, b := newHost(t, "a"), newHost(t, "b")
	_, bAddr := startServer(t, b.rep)
	a.masterOf(t, bAddr)
	aMount := startMount(t, a.env)
	md := filepath.Join(a.env.mnt, "user", "Maildir")
	mkMaildir(t, md)
	deliver(t, md, "before.host", "x")
	(&pair{m: a.env, r: b.rep, mount: aMount}).waitSynced(t)

	var wg sync.WaitGroup
	results := make([]error, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = exec.Command(binary, "promote", "--root", b.tree).Run()
		}()
	}
	wg.Wait()
	if (results[0] == nil) == (results[1] == nil) {
		t.Fatalf("two concurrent promotes: %v and %v; exactly one must win", results[0], results[1])
	}
	st, _ := fence.Read(b.tree, fence.Replica)
	if st.Epoch != 1 || st.Role != fence.Master {
		t.Errorf("after promote: %s, want epoch 1 master", st)
	}

	before := messages(t, b.tree)
	deliver(t, md, "after.host", "must not reach b")
	waitStatus(t, a.env, 30*time.Second, "the fencing", func(c replicator.ChannelStatus) bool { return c.Fenced })
	if _, ok := messages(t, b.tree)["after.host"]; ok || len(messages(t, b.tree)) != len(before) {
		t.Error("the fenced master changed the promoted tree")
	}
	if !strings.Contains(aMount.stderr.String(), "FENCED") {
		t.Errorf("the mount log does not say FENCED at error level:\n%s", aMount.stderr)
	}
	// The master still serves mail.
	must(t, os.WriteFile(filepath.Join(md, "still-works"), []byte("x"), 0o600))

	// A promoted tree refuses to be mounted while its server still runs,
	// and a replica tree refuses to be mounted at all.
	b.masterOf(t, "127.0.0.1:1")
	if out, err := exec.Command(binary, "mount", "-c", b.env.conf).CombinedOutput(); err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("mounting a tree its server still serves: %v\n%s", err, out)
	}
	c := newHost(t, "c")
	fence.Init(c.tree, fence.Replica)
	c.masterOf(t, "127.0.0.1:1")
	if out, err := exec.Command(binary, "mount", "-c", c.env.conf).CombinedOutput(); err == nil || !strings.Contains(string(out), "promote it first") {
		t.Errorf("mounting a replica tree: %v\n%s", err, out)
	}
}

// TestPlannedSwitchover: with lag 0, stop the master cleanly, promote,
// mount the standby, bring the old master back as its replica: the
// quarantine stays empty.
func TestPlannedSwitchover(t *testing.T) {
	a, b := newHost(t, "a"), newHost(t, "b")
	bServer, bAddr := startServer(t, b.rep)
	a.masterOf(t, bAddr)
	aMount := startMount(t, a.env)
	md := filepath.Join(a.env.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i := 0; i < 10; i++ {
		deliver(t, md, fmt.Sprintf("%d.host", i), message(i))
	}
	(&pair{m: a.env, r: b.rep, mount: aMount}).waitSynced(t)
	aMount.stop(t, syscall.SIGTERM)
	bServer.stop(t, syscall.SIGTERM)
	if out, err := exec.Command(binary, "promote", "--root", b.tree).CombinedOutput(); err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	_, aAddr := startServer(t, a.rep)
	b.masterOf(t, aAddr)
	bMount := startMount(t, b.env)
	deliver(t, filepath.Join(b.env.mnt, "user", "Maildir"), "after.host", "new master")
	(&pair{m: b.env, r: a.rep, mount: bMount}).waitSynced(t)
	if q := messages(t, filepath.Join(a.tree, fence.QuarantineDir)); len(q) > 0 {
		t.Errorf("a planned switch-over quarantined %v", q)
	}
}

// TestPerMasterTrees: with --per-master, two masters replicating to one
// server each land in their own tree, ROOT/<identity>, with its own epoch.
func TestPerMasterTrees(t *testing.T) {
	r := newReplicaEnv(t, "")
	r.writeConf(t, fmt.Sprintf("admins: master bob\nsasl_passwd_file: %s\n", r.passwd))
	p, addr, err := startProc(t, []string{"server", "-c", r.conf, "--listen", "127.0.0.1:0", "--root", r.root, "--per-master"},
		func(l string) (string, bool) { return strings.CutPrefix(l, "spoolsync: ready: serving "+r.root+" on ") }, nil)
	must(t, err)
	_ = p
	for _, who := range [][2]string{{"master", "pw"}, {"bob", "bobpw"}} {
		m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: %s\nsync_password: %s\n", addr, who[0], who[1]))
		mount := startMount(t, m)
		md := filepath.Join(m.mnt, "Maildir")
		mkMaildir(t, md)
		deliver(t, md, who[0]+".host", "mail of "+who[0])
		tree := filepath.Join(r.root, who[0])
		(&pair{m: m, r: &replicaEnv{root: tree}, mount: mount}).waitSynced(t)
		if st, _ := fence.Read(tree, fence.Master); st.Role != fence.Replica {
			t.Errorf("%s: %s, want a replica tree", tree, st)
		}
	}
	if _, err := os.Stat(filepath.Join(r.root, "Maildir")); err == nil {
		t.Error("a master wrote into the shared root instead of its own tree")
	}
}
