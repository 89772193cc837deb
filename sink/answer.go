package sink

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Every answer of every InfluxDB version is read here, into a WriteError;
// classify (classify.go) decides what it means. The shapes, with where
// each comes from, are in testdata/answers and answer_test.go.

// RefusedLine is a line a 3.x answer names: by its 1-based number in the
// body as sent, with the line as the server quotes it (maybe cut short)
// and why.
type RefusedLine struct {
	Number int
	Line   string
	Reason string
}

// v3Item is one refused line of a 3.x answer.
type v3Item struct {
	OriginalLine string `json:"original_line"`
	LineNumber   int    `json:"line_number"`
	ErrorMessage string `json:"error_message"`
}

// parseAnswer reads an answer other than 2xx:
//   - 1.x: a JSON {"error": "..."} (or plain text from a proxy), e.g.
//     "partial write: points beyond retention policy dropped=3" (400), or
//     "unable to parse '<line>': <reason>" per line;
//   - 2.x: JSON {"code": "invalid", "message": "..."} with the same words;
//   - 3.x: JSON {"error": "...", "data": [...]} where data lists refused
//     lines ({original_line, line_number, error_message}), or one such
//     object when nothing was stored (accept_partial=false), or is absent.
func parseAnswer(code int, h http.Header, body []byte, now time.Time) *WriteError {
	we := &WriteError{StatusCode: code, RetryAfter: parseRetryAfter(h.Get("Retry-After"), now)}
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	trimmed := bytes.TrimSpace(body)
	if ct == "application/json" || (len(trimmed) > 0 && trimmed[0] == '{') {
		var a struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Error   string          `json:"error"`
			Data    json.RawMessage `json:"data"`
		}
		if json.Unmarshal(trimmed, &a) == nil {
			switch {
			case a.Message != "":
				we.Message = a.Message
			case a.Error != "":
				we.Message = a.Error
			}
			we.Refused = parseV3Data(a.Data)
			if len(we.Refused) > 0 {
				// The 3.x partial write: every line not listed was stored.
				we.Stored = strings.Contains(a.Error, "partial write of line protocol occurred")
			}
			if we.Message != "" || len(we.Refused) > 0 {
				return we
			}
		}
	}
	we.Message = string(trimmed)
	if we.Message == "" {
		we.Message = h.Get("X-Influxdb-Error")
	}
	if we.Message == "" {
		we.Message = http.StatusText(code)
	}
	return we
}

// parseV3Data reads 3.x's data: a list of refused lines, or one.
func parseV3Data(raw json.RawMessage) []RefusedLine {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var items []v3Item
	if raw[0] == '{' {
		var one v3Item
		if json.Unmarshal(raw, &one) != nil {
			return nil
		}
		items = []v3Item{one}
	} else if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	out := make([]RefusedLine, 0, len(items))
	for _, it := range items {
		if it.LineNumber <= 0 {
			continue
		}
		out = append(out, RefusedLine{Number: it.LineNumber, Line: it.OriginalLine, Reason: it.ErrorMessage})
	}
	return out
}
