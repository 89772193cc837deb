package lineproto

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		name                  string
		renamed, reserved, v1 bool
	}{
		{"time", true, true, false}, {"_field", true, true, false}, {"_measurement", true, true, false},
		{"_private", true, false, false}, {"value", false, false, true}, {"count", false, false, true},
		{"le", false, false, false}, {"timestamp", false, false, false}, {"", false, false, false},
	} {
		if RenamedTag(c.name) != c.renamed || RenamedTag([]byte(c.name)) != c.renamed {
			t.Errorf("RenamedTag(%q) != %v", c.name, c.renamed)
		}
		if ReservedField(c.name) != c.reserved || V1Field(c.name) != c.v1 {
			t.Errorf("%q: reserved %v v1 %v, want %v %v", c.name, ReservedField(c.name), V1Field(c.name), c.reserved, c.v1)
		}
	}
	for v, want := range map[string]string{
		"ok": "", "caf\xc3\xa9": "", "\xff": RefusedUTF8, "a\x00b": RefusedNUL,
		strings.Repeat("x", MaxTagValue): "", strings.Repeat("x", MaxTagValue+1): RefusedLong,
	} {
		if got := RefusedValue(v); got != want || RefusedValue([]byte(v)) != want {
			t.Errorf("RefusedValue(%.20q) = %q, want %q", v, got, want)
		}
	}
}

func BenchmarkRefusedValue(b *testing.B) {
	v := "registry.example.com/team/app:1.2.3"
	bv := []byte(v)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if RefusedValue(v) != "" || RefusedValue(bv) != "" {
			b.Fatal("refused")
		}
	}
}
