package sink

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every answer shape of every version (testdata/answers, each with its
// source), read and classified: what the writer does, which lines it
// names and whether the rest was stored.
func TestAnswers(t *testing.T) {
	cases := []struct {
		file     string
		status   int
		act      writeAction
		refused  []int // line numbers named
		stored   bool
		contains string // in the message
		class    string // refusalClass of the message (or of the first line's reason)
	}{
		{"v1-partial-retention.json", 400, actPartial, nil, false, "dropped=3", "retention"},
		{"v1-parse.json", 400, actPartial, nil, false, "unable to parse 'm,a=b v= 1'", "parse"},
		{"v1-rp-not-found.json", 500, actNeedsPerson, nil, false, "retention policy not found: rp30d", "other"},
		{"v1-db-not-found.json", 404, actNeedsPerson, nil, false, "database not found", "other"},
		{"v2-invalid.json", 400, actBadData, nil, false, "unable to parse 'm,a=b v= 1': missing field value", "parse"},
		{"v2-unprocessable.json", 422, actPartial, nil, false, "beyond retention policy dropped=1", "retention"},
		{"v2-too-large.json", 413, actTooLarge, nil, false, "points batch is too large", "limit"},
		{"v2-unauthorized.json", 401, actNeedsPerson, nil, false, "unauthorized access", "other"},
		{"v2-bucket-not-found.json", 404, actNeedsPerson, nil, false, `bucket "b" not found`, "other"},
		{"v2-rate-limited.json", 429, actRetry, nil, false, "plan limit", "other"},
		{"v3-partial.json", 400, actPartial, []int{2, 4}, true, "partial write of line protocol occurred", "type_conflict"},
		{"v3-parse-failed.json", 400, actBadData, []int{2}, false, "parsing failed for write_lp endpoint", "type_conflict"},
		{"v3-no-data.json", 400, actBadData, nil, false, "invalid database name", "other"},
		{"v3-unavailable.json", 503, actRetry, nil, false, "write buffer is full", "other"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", "answers", c.file))
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
			if c.status == 429 || c.status == 503 {
				h.Set("Retry-After", "3")
			}
			we := parseAnswer(c.status, h, body, time.Now())
			act, wait := classify(we)
			if act != c.act {
				t.Errorf("classified %s, want %s", act, c.act)
			}
			if (c.status == 429 || c.status == 503) && wait != 3*time.Second {
				t.Errorf("Retry-After read as %s", wait)
			}
			var nums []int
			for _, r := range we.Refused {
				nums = append(nums, r.Number)
			}
			if len(nums) != len(c.refused) || (len(nums) > 0 && nums[0] != c.refused[0]) || we.Stored != c.stored {
				t.Errorf("refused lines %v stored %t, want %v %t", nums, we.Stored, c.refused, c.stored)
			}
			if !strings.Contains(we.Message, c.contains) {
				t.Errorf("message %q lacks %q", we.Message, c.contains)
			}
			class := refusalClass(we.Message)
			if len(we.Refused) > 0 {
				class = refusalClass(we.Refused[0].Reason)
			}
			if class != c.class {
				t.Errorf("class %s, want %s", class, c.class)
			}
		})
	}
	// Answers that are not JSON: a proxy's text, an empty body.
	if we := parseAnswer(502, http.Header{"Content-Type": {"text/html"}}, []byte("<html>Bad Gateway</html>"), time.Now()); we.Message != "<html>Bad Gateway</html>" {
		t.Errorf("text answer read as %q", we.Message)
	}
	if we := parseAnswer(500, http.Header{"X-Influxdb-Error": {"engine: timeout"}}, nil, time.Now()); we.Message != "engine: timeout" {
		t.Errorf("empty body read as %q", we.Message)
	}
	if we := parseAnswer(400, http.Header{}, []byte(`{"error":"partial write of line protocol occurred","data":"nonsense"}`), time.Now()); len(we.Refused) != 0 || we.Stored {
		t.Errorf("a data field of another shape named lines: %+v", we)
	}
}
