package server

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestAuthCache: a repeated good login is remembered; a wrong password
// after it is still refused; a changed hash in the file voids the entry.
func TestAuthCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	write := func(pw string) {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err := os.WriteFile(p, []byte("master:"+string(h)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	auth := Authenticator(p)
	for i := 0; i < 2; i++ {
		if err := auth("master", "one"); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	if err := auth("master", "two"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password after a cached login: %v", err)
	}
	write("two")
	if err := auth("master", "one"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("old password after the hash changed: %v", err)
	}
	if err := auth("master", "two"); err != nil {
		t.Errorf("new password: %v", err)
	}
}
