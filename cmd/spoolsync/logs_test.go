package main

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// logKeySynonyms maps names a log call might use for a concept to the one
// key the code base uses for it, so that one query (err=..., channel=...)
// finds every line about it.
var logKeySynonyms = map[string]string{
	"error": "err", "e": "err", "cause": "err", "errmsg": "err", "error_msg": "err",
	"chan": "channel", "ch": "channel", "channel_name": "channel",
	"replica_addr": "replica", "replica_host": "replica", "host": "replica", "sync_host": "replica", "server": "replica",
	"file": "path", "filename": "path", "file_path": "path", "filepath": "path", "relpath": "path", "rel_path": "path", "p": "path",
}

// logKeys returns every constant key of a log/slog call in the module's
// non-test Go files (Debug, Info, Warn, Error after the message; With),
// with where it is.
func logKeys(t *testing.T, root string) map[string][]string {
	t.Helper()
	keys := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := c.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			first := 1
			switch sel.Sel.Name {
			case "Debug", "Info", "Warn", "Error":
				// A message first: a string constant (t.Error(err) and
				// errors.New are not log calls).
				if len(c.Args) < 3 {
					return true
				}
				if l, ok := c.Args[0].(*ast.BasicLit); !ok || l.Kind != token.STRING {
					return true
				}
			case "With":
				first = 0
			default:
				return true
			}
			for i := first; i < len(c.Args); i += 2 {
				if l, ok := c.Args[i].(*ast.BasicLit); ok && l.Kind == token.STRING {
					k, _ := strconv.Unquote(l.Value)
					keys[k] = append(keys[k], fset.Position(l.Pos()).String())
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestLogKeys: one key name per concept across the code base: err,
// channel, replica, path.
func TestLogKeys(t *testing.T) {
	keys := logKeys(t, filepath.Join("..", ".."))
	for _, want := range []string{"err", "channel", "replica", "path"} {
		if len(keys[want]) == 0 {
			t.Errorf("no log call uses the key %q: is the scan finding the log calls?", want)
		}
	}
	for k, where := range keys {
		if canon, ok := logKeySynonyms[k]; ok {
			t.Errorf("log key %q at %s: use %q, the code base's key for that", k, strings.Join(where, ", "), canon)
		}
	}
}

// TestLogFormatJSON: with log_format: json every line the server logs is
// a JSON object with the message and its keys.
func TestLogFormatJSON(t *testing.T) {
	r := newReplicaEnv(t, "log_format: json\n")
	p, _, err := startServerAt(t, r, "127.0.0.1:0")
	must(t, err)
	p.stop(t, syscall.SIGTERM)
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want the serving and stopped lines, got %q", lines)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		if rec["msg"] == nil || rec["level"] == nil || rec["time"] == nil {
			t.Errorf("log line lacks msg, level or time: %q", l)
		}
	}
	var first map[string]any
	must(t, json.Unmarshal([]byte(lines[0]), &first))
	if first["msg"] != "serving" || first["root"] != r.root {
		t.Errorf("first line %q: want msg serving with root %s", lines[0], r.root)
	}

	// The default is text: key=value.
	r = newReplicaEnv(t, "")
	p, _, err = startServerAt(t, r, "127.0.0.1:0")
	must(t, err)
	p.stop(t, syscall.SIGTERM)
	if l := p.stderr.String(); !strings.HasPrefix(l, "time=") || !strings.Contains(l, " msg=serving ") {
		t.Errorf("default log format is not text: %q", l)
	}
}
