package sink

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// writeAction is what the writer does after an answer from InfluxDB.
type writeAction int

const (
	// actDone: written.
	actDone writeAction = iota
	// actRetry: a passing failure (network, 5xx, 429, 408): keep the data,
	// retry with backoff (or after the server's Retry-After).
	actRetry
	// actNeedsPerson: credentials refused, database missing, or an answer
	// that says the URL is wrong: keep the data, retry at the slowest
	// backoff, say loudly what to fix. Dropping would lose data an
	// operator can still save by fixing the config.
	actNeedsPerson
	// actPartial: InfluxDB stored the good points and refused some
	// ("partial write"): never send the batch again; count what it refused.
	actPartial
	// actBadData: InfluxDB refused the batch for its content and stored
	// nothing (400/422 without "partial write"): take out the lines it
	// names, or bisect to find them.
	actBadData
	// actTooLarge: 413: split the batch and send the halves.
	actTooLarge
)

func (a writeAction) String() string {
	return [...]string{"done", "retry", "needs_person", "partial", "bad_data", "too_large"}[a]
}

// classify decides what an answer from InfluxDB means. wait is the
// server's Retry-After, when it gave one.
func classify(err error) (act writeAction, wait time.Duration) {
	if err == nil {
		return actDone, 0
	}
	var we *WriteError
	if !errors.As(err, &we) {
		return actRetry, 0 // network trouble, timeouts
	}
	switch code := we.StatusCode; {
	case code == http.StatusBadRequest || code == http.StatusUnprocessableEntity:
		// 1.x answers 400 "partial write: ..." after storing the good
		// points; 2.x answers 422 with the same words.
		if strings.Contains(we.Message, "partial write") {
			return actPartial, 0
		}
		return actBadData, 0
	case code == http.StatusRequestEntityTooLarge:
		return actTooLarge, 0
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return actRetry, we.RetryAfter
	case code >= 500 && strings.Contains(we.Message, "retention policy not found"):
		// 1.x answers 500 to a write into a missing retention policy:
		// a configuration problem, not an overloaded server.
		return actNeedsPerson, 0
	case code == http.StatusRequestTimeout || code >= 500:
		return actRetry, we.RetryAfter
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound:
		return actNeedsPerson, 0
	default:
		// 405, 409, 410, 3xx...: not an InfluxDB write endpoint as we know
		// it (a proxy or a wrong URL). Nothing about the data is wrong.
		return actNeedsPerson, 0
	}
}

// hint says what an operator should do about a failing write.
func hint(err error) string {
	var we *WriteError
	if !errors.As(err, &we) {
		return "InfluxDB cannot be reached: check --influx-url and that InfluxDB runs; data stays queued"
	}
	switch c := we.StatusCode; {
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return "InfluxDB refused the credentials: check the token file (--influx-token-file) and the user's write permission; data stays queued"
	case strings.Contains(we.Message, "retention policy not found"):
		return "the InfluxDB 1.x retention policy named in --influx-bucket (database/retention-policy) does not exist: create it (CREATE RETENTION POLICY) or name another; data stays queued and writes resume within seconds of the fix"
	case c == http.StatusNotFound && strings.Contains(we.Message, "database not found"):
		return "the InfluxDB 1.x database does not exist: create it (CREATE DATABASE), or let scrapeflux create it (--influx-create-database, on by default); data stays queued"
	case c == http.StatusNotFound && strings.Contains(we.Message, "bucket"):
		return "the InfluxDB 2.x bucket does not exist: create it (influx bucket create) or check --influx-bucket and --influx-org; data stays queued"
	case c == http.StatusNotFound:
		return "not found: check --influx-url, --influx-bucket (and --influx-org for 2.x); data stays queued"
	case c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout:
		return "InfluxDB is failing or overloaded; data stays queued and is retried"
	default:
		return "unexpected answer: check that --influx-url points at InfluxDB's HTTP API; data stays queued"
	}
}

// refusal is what a 400/422 answer says about the lines of a batch.
type refusal struct {
	lines   map[string]string // refused lines named in the answer -> reason
	dropped int               // "dropped=N" of a partial write: points refused beyond the named lines
	reason  string            // short class: parse, type_conflict, retention, limit, other
	// complete: the answer ends in "dropped=N", so it was not cut short
	// (InfluxDB 1.x cuts its error header at 1 KiB) and names every line.
	complete bool
	// prefix: the start of a refused line whose name was cut short.
	prefix string
}

// minPrefix is the shortest cut-short line name matched as a prefix.
const minPrefix = 32

// names reports whether the answer names ln.
func (r *refusal) names(ln []byte) bool {
	if _, ok := r.lines[string(ln)]; ok {
		return true
	}
	return len(r.prefix) >= minPrefix && bytes.HasPrefix(ln, []byte(r.prefix))
}

// parseRefusal reads InfluxDB's words. 1.x names each line it cannot
// parse as "unable to parse '<line>': <reason>", one per line of the
// message, and ends a partial write with "dropped=N" for points it parsed
// but refused (type conflicts, retention, limits).
func parseRefusal(msg string) refusal {
	r := refusal{reason: refusalClass(msg)}
	body := strings.TrimPrefix(msg, "partial write: ")
	if i := strings.LastIndex(body, " dropped="); i >= 0 {
		if n, err := strconv.Atoi(strings.TrimSpace(body[i+len(" dropped="):])); err == nil {
			r.dropped = n
			r.complete = true
			body = body[:i]
		}
	}
	const pfx = "unable to parse '"
	for _, part := range strings.Split(body, "\n") {
		i := strings.Index(part, pfx)
		if i < 0 {
			continue
		}
		part = part[i+len(pfx):]
		j := strings.LastIndex(part, "': ")
		if j < 0 {
			r.prefix = part
			continue
		}
		if r.lines == nil {
			r.lines = map[string]string{}
		}
		r.lines[part[:j]] = part[j+3:]
	}
	return r
}

func refusalClass(msg string) string {
	switch {
	case strings.Contains(msg, "unable to parse"), strings.Contains(msg, "max key length"):
		return "parse"
	case strings.Contains(msg, "field type conflict"):
		return "type_conflict"
	case strings.Contains(msg, "beyond retention policy"):
		return "retention"
	case strings.Contains(msg, "limit exceeded"), strings.Contains(msg, "would exceed"), strings.Contains(msg, "too large"):
		return "limit"
	case strings.Contains(msg, "invalid column type"):
		return "type_conflict"
	default:
		return "other"
	}
}

// cut shortens s for a log line.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
