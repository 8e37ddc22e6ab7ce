package synclog

import (
	"fmt"
	"testing"
)

func TestAddRange(t *testing.T) {
	r := func(off, n uint64) Range { return Range{Off: off, Len: n} }
	for _, tc := range []struct {
		adds  []Range
		limit int
		want  string
	}{
		{[]Range{r(0, 5)}, 0, "[{0 5}]"},
		{[]Range{r(10, 5), r(0, 5)}, 0, "[{0 5} {10 5}]"},
		{[]Range{r(0, 5), r(5, 5)}, 0, "[{0 10}]"},                   // adjacent merge
		{[]Range{r(0, 5), r(3, 10)}, 0, "[{0 13}]"},                  // overlap
		{[]Range{r(0, 2), r(4, 2), r(8, 2), r(1, 8)}, 0, "[{0 10}]"}, // spans several
		{[]Range{r(0, 1), r(10, 1), r(12, 1)}, 2, "[{0 1} {10 3}]"},  // limit merges smallest gap
		{[]Range{r(5, 0)}, 0, "[]"},                                  // empty ignored
		{[]Range{r(100, 10), r(0, 10), r(50, 10)}, 0, "[{0 10} {50 10} {100 10}]"},
	} {
		var rs []Range
		for _, a := range tc.adds {
			rs = AddRange(rs, a, tc.limit)
		}
		if got := fmt.Sprint(rs); got != tc.want {
			t.Errorf("AddRange %v (limit %d) = %s, want %s", tc.adds, tc.limit, got, tc.want)
		}
	}
}
