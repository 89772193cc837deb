package sink

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// fakeInflux answers writes as InfluxDB 2.x OSS or 3.x Core/Enterprise do,
// per their documentation and source (neither can be built here: both
// need Rust or more than this machine has; the 1.x tests run the real
// influxd 1.8.10). The answer bodies are those of testdata/answers, where
// each names its source. A line is refused when it contains refuseMark.
//
//   - /ping: 2.x answers 204 with X-Influxdb-Version "v2.7.12" and
//     X-Influxdb-Build "OSS"; 3.x answers 200 with X-Influxdb-Version
//     "3.11.0", X-Influxdb-Build "Core" and a JSON body (version,
//     revision, process_id).
//   - 2.x /api/v2/write: a line that does not parse refuses the whole
//     request (400, {"code":"invalid","message":"unable to parse '<line>':
//     <reason>"}, the first such line only); nothing is stored.
//   - 3.x /api/v3/write_lp (accept_partial=true, the default): the good
//     lines are stored, 400 {"error":"partial write of line protocol
//     occurred","data":[{"original_line","line_number","error_message"}]}
//     names every refused line by its 1-based number. With
//     accept_partial=false: nothing stored, 400 {"error":"parsing failed
//     for write_lp endpoint","data":{...}} naming the first. 3.x serves
//     /api/v2/write and /write too, answering the same way.
//   - 2.x, points older than the bucket's retention (retention set): the
//     others are stored and the answer is 422 {"code":"unprocessable
//     entity","message":"failure writing points to database: partial
//     write: points beyond retention policy dropped=N"} (a line that
//     does not parse takes precedence: 400, nothing stored).
//   - token set: every request without "Bearer <token>" or "Token
//     <token>" is answered 401 before it reaches its handler, /ping on
//     3.x included (3.x authorizes /ping unless started with
//     --disable-authz ping; influxdb3 tests/server/auth.rs: a write
//     without the header is 401). 2.x serves /ping to anyone and
//     answers a write without its token 401
//     {"code":"unauthorized","message":"unauthorized access"}.
type fakeInflux struct {
	t         testing.TB
	major     int // 2 or 3
	srv       *httptest.Server
	maxBody   int           // 413 past it (0: none)
	retention time.Duration // 2.x: points older than this are refused with 422 (0: none)
	token     string        // required when set

	mu       sync.Mutex
	paths    map[string]int // requests by path
	auth     string         // Authorization of the last write
	stored   map[string]int // line -> times stored
	requests int
	refused  int // refusals answered, line by line
	pings    int
	// unauthorized: requests answered 401; expired: lines refused as
	// beyond retention.
	unauthorized, expired int
	// lineCounts: lines of each write request, in order; tooLarge: the
	// indexes of those answered 413.
	lineCounts []int
	tooLarge   []int

	// cat: 3.x's catalog with its limits (nil: none kept).
	cat *servertest.Catalog3
}

const refuseMark = "refuse_me"

func newFakeInflux(t testing.TB, major int) *fakeInflux {
	f := &fakeInflux{t: t, major: major, stored: map[string]int{}, paths: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeInflux) serve(w http.ResponseWriter, r *http.Request) {
	if a := r.Header.Get("Authorization"); f.token != "" && a != "Bearer "+f.token && a != "Token "+f.token && (f.major == 3 || r.URL.Path != "/ping") {
		f.mu.Lock()
		f.unauthorized++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		if f.major == 2 {
			fmt.Fprint(w, `{"code":"unauthorized","message":"unauthorized access"}`)
		}
		return
	}
	switch {
	case r.URL.Path == "/ping":
		f.mu.Lock()
		f.pings++
		f.mu.Unlock()
		if f.major == 3 {
			w.Header().Set("X-Influxdb-Version", "3.11.0")
			w.Header().Set("X-Influxdb-Build", "Core")
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"version":"3.11.0","revision":"1f2e3d4","process_id":"0199f3a2-7a51-7c2e-9d53-3f1c8a1b2c3d"}`)
			return
		}
		w.Header().Set("X-Influxdb-Version", "v2.7.12")
		w.Header().Set("X-Influxdb-Build", "OSS")
		w.WriteHeader(http.StatusNoContent)
		return
	case r.URL.Path == "/api/v3/query_sql" && f.major == 3 && f.cat != nil:
		f.cat.ServeQuery(w, r)
		return
	case r.URL.Path == "/api/v2/write", r.URL.Path == "/api/v3/write_lp" && f.major == 3, r.URL.Path == "/write" && f.major == 3:
		// 3.x also serves the 1.x and 2.x write endpoints, with the same
		// partial writes and answers.
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"code":"not found","message":"path not found"}`)
		return
	}
	data, ok := servertest.WriteBody(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	f.paths[r.URL.Path]++
	f.auth = r.Header.Get("Authorization")
	w.Header().Set("Content-Type", "application/json")
	f.lineCounts = append(f.lineCounts, strings.Count(string(data), "\n"))
	if f.maxBody > 0 && len(data) > f.maxBody {
		f.tooLarge = append(f.tooLarge, len(f.lineCounts)-1)
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		if f.major == 2 {
			fmt.Fprint(w, `{"code":"request too large","message":"unable to read data: points batch is too large"}`)
		} else {
			fmt.Fprint(w, `{"error":"the request was too large"}`)
		}
		return
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var bad []item
	for i, ln := range lines {
		if strings.Contains(ln, refuseMark) {
			bad = append(bad, item{OriginalLine: ln, LineNumber: i + 1, ErrorMessage: "invalid column type for column 'refuse_me', expected iox::column_type::field::float, got iox::column_type::field::string"})
		}
	}
	if f.cat != nil {
		refused, whole := f.cat.Check(f.t, r.URL.Query().Get("db"), lines)
		bad = append(bad, refused...)
		if whole != "" {
			// A CatalogError of the whole request: 422, nothing stored
			// (http.rs, IntoResponse for the write error).
			w.WriteHeader(http.StatusUnprocessableEntity)
			b, _ := json.Marshal(map[string]any{"error": whole, "data": nil})
			w.Write(b)
			return
		}
	}
	partial := f.major == 3 && r.URL.Query().Get("accept_partial") != "false"
	expired := 0
	if len(bad) == 0 || partial {
		for _, ln := range lines {
			if f.beyondRetention(ln, r.URL.Query().Get("precision")) {
				expired++
			} else if !strings.Contains(ln, refuseMark) && !refusedLine(bad, ln) {
				f.stored[ln]++
			}
		}
	}
	if len(bad) == 0 && expired > 0 {
		f.expired += expired
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, `{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped=%d"}`, expired)
		return
	}
	if len(bad) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusBadRequest)
	switch {
	case f.major == 2:
		f.refused++
		b, _ := json.Marshal(map[string]string{"code": "invalid", "message": fmt.Sprintf("unable to parse '%s': invalid field format", bad[0].OriginalLine)})
		w.Write(b)
	case partial:
		f.refused += len(bad)
		b, _ := json.Marshal(map[string]any{"error": "partial write of line protocol occurred", "data": bad})
		w.Write(b)
	default:
		f.refused++
		b, _ := json.Marshal(map[string]any{"error": "parsing failed for write_lp endpoint", "data": bad[0]})
		w.Write(b)
	}
}

type item = servertest.RefusedLine3

func refusedLine(bad []item, ln string) bool {
	for _, b := range bad {
		if b.OriginalLine == ln {
			return true
		}
	}
	return false
}

// beyondRetention tells whether a line's timestamp (its last field, in the
// request's precision) is older than the retention (2.x only).
func (f *fakeInflux) beyondRetention(line, precision string) bool {
	if f.major != 2 || f.retention == 0 {
		return false
	}
	unit, ok := map[string]time.Duration{"": time.Nanosecond, "ns": time.Nanosecond, "us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[precision]
	if !ok {
		f.t.Errorf("precision %q is not one 2.x takes", precision)
	}
	ts, err := strconv.ParseInt(line[strings.LastIndexByte(line, ' ')+1:], 10, 64)
	return err == nil && time.Duration(ts)*unit < time.Duration(time.Now().Add(-f.retention).UnixNano())
}

// twice lists lines stored more than once.
func (f *fakeInflux) twice() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for ln, n := range f.stored {
		if n > 1 {
			out = append(out, ln)
		}
	}
	return out
}

func (f *fakeInflux) counts() (stored, requests int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stored), f.requests
}
