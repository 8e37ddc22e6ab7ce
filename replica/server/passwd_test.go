package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestPasswdFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	must(t, os.WriteFile(path, []byte("# masters\nother:$2a$04$notarealhash\n"), 0o644))
	h, err := HashPassword("pw1")
	must(t, err)
	must(t, SetPassword(path, "master", h))
	h2, err := HashPassword("pw2")
	must(t, err)
	must(t, SetPassword(path, "master", h2)) // an update replaces the line
	b, err := os.ReadFile(path)
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "# masters" || lines[1] != "other:$2a$04$notarealhash" || lines[2] != "master:"+h2 {
		t.Errorf("file:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}
	auth := Authenticator(path)
	if err := auth("master", "pw2"); err != nil {
		t.Errorf("right password: %v", err)
	}
	if err := auth("master", "pw1"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("old password: %v, want ErrWrongPassword", err)
	}
	if err := auth("nobody", "pw2"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v, want ErrUnknownUser", err)
	}
	for _, bad := range []string{"", "a:b", "a b", "#a", "a\tb", "a\x00"} {
		if err := SetPassword(path, bad, h); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

// TestUnknownUserCostsAsMuch: an unknown user is refused after a bcrypt of
// the same cost as a stored password's, so how long a refusal takes does
// not tell whether the user exists.
func TestUnknownUserCostsAsMuch(t *testing.T) {
	cost, err := bcrypt.Cost(dummyHash)
	if err != nil || cost != BcryptCost {
		t.Fatalf("dummy hash: cost %d, %v; want %d, as HashPassword makes", cost, err, BcryptCost)
	}
}
