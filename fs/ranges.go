package fs

import (
	"slices"

	"spoolsync/replicator/synclog"
)

// maxRanges bounds the dirty ranges kept per inode. Past it, neighbouring
// ranges are merged across their gaps: a range may then cover bytes that did
// not change, which costs the replicator a few extra bytes, never
// correctness (it ships the current content of every byte in the range).
const maxRanges = 64

// rangeSet is a sorted list of non-overlapping, non-adjacent byte ranges.
type rangeSet []synclog.Range

// add inserts [off, off+n), merging with what it overlaps or touches.
func (s rangeSet) add(off, n uint64) rangeSet {
	if n == 0 {
		return s
	}
	end := off + n
	// First range that ends at or after off: it may merge with the new one.
	i, _ := slices.BinarySearchFunc(s, off, func(r synclog.Range, off uint64) int {
		switch e := r.Off + r.Len; {
		case e < off:
			return -1
		case e > off:
			return 1
		}
		return 0
	})
	j := i
	for j < len(s) && s[j].Off <= end {
		off = min(off, s[j].Off)
		end = max(end, s[j].Off+s[j].Len)
		j++
	}
	s = slices.Replace(s, i, j, synclog.Range{Off: off, Len: end - off})
	for len(s) > maxRanges {
		s = s.mergeSmallestGap()
	}
	return s
}

func (s rangeSet) mergeSmallestGap() rangeSet {
	best := 0
	for i := 1; i+1 < len(s); i++ {
		if s[i+1].Off-(s[i].Off+s[i].Len) < s[best+1].Off-(s[best].Off+s[best].Len) {
			best = i
		}
	}
	end := s[best+1].Off + s[best+1].Len
	s[best].Len = end - s[best].Off
	return slices.Delete(s, best+1, best+2)
}
