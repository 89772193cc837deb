package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
)

// The /targets page: plain server-rendered HTML an operator keeps open for
// a swarm of thousands of engines. Filtering (state, job, search) and
// paging happen on the server, so a page holds at most pageSize rows
// however many targets there are; it refreshes itself every 10 seconds
// with the same filters. ?format=json gives every matching target.

const pageSize = 200

// targetRow is one target on the page and in the JSON.
type targetRow struct {
	// Series: distinct series over the last hour, NewSeries of them new
	// in it, SeriesLimit the target's limit and SeriesHeldBack the samples
	// of new series the limit or a budget held back (all zero when
	// series are not tracked: no limit or budget set).
	Series         int   `json:"series,omitempty"`
	NewSeries      int   `json:"new_series_last_hour,omitempty"`
	SeriesLimit    int   `json:"series_limit,omitempty"`
	SeriesHeldBack int64 `json:"series_held_back,omitempty"`
	// WidestLabels: the label names with the most distinct values.
	WidestLabels []scrape.LabelWidth `json:"widest_labels,omitempty"`
	// SchemaHeld: samples the InfluxDB 3 schema guard held back (a table
	// or column past the server's limits), and why the latest were.
	SchemaHeld    int64  `json:"schema_held_samples,omitempty"`
	SchemaHeldWhy string `json:"schema_held_reason,omitempty"`
	// ConfigJob is the configuration's job that found the target; Job
	// its job tag.
	ConfigJob       string            `json:"config_job"`
	URL             string            `json:"url"`
	Job             string            `json:"job"`
	Instance        string            `json:"instance"`
	Tags            map[string]string `json:"tags"`
	Health          string            `json:"health"`
	Role            string            `json:"role,omitempty"`
	Owners          []string          `json:"owners,omitempty"`
	IntervalSeconds float64           `json:"interval_seconds"`
	LastScrape      *time.Time        `json:"last_scrape"`
	LastScrapeAgo   string            `json:"-"`
	DurationSeconds float64           `json:"duration_seconds"`
	Samples         int               `json:"samples"`
	Scrapes         int64             `json:"scrapes"`
	Failures        int64             `json:"failures"`
	LastError       string            `json:"last_error"`
	// Lint is the last lint of the target's exposition (--lint-interval).
	Lint *scrape.LintReport `json:"lint,omitempty"`
}

// jobRow counts one job's targets by state.
type jobRow struct {
	Name                       string
	Up, Down, Unknown, Skipped int
	Discovered                 int
	NoTargets                  bool
	Link, DownLink             template.URL
	// Sources (static, consul), the discovery's state, the job tags its
	// targets carry (Consul service names) and instances it skipped.
	Sources        string
	Discovery      string
	DiscoveryError bool
	JobTags        []string
	SkippedInst    []string
	// Budget: the job's own series budgets (max_hourly_series,
	// max_daily_series) and what any budget held back of its samples.
	Budget      string
	BudgetError bool
	tags        map[string]bool
}

// pageStatus is the header: where data goes and where targets come from.
type pageStatus struct {
	Writer, WriterClass string
	LastWrite           string
	LastError           string
	QueuedSamples       int64
	QueuedBytes         int64
	// QueueDisk: the disk queue's files and bound; QueueDiskError: why
	// the disk refuses writes, while it does.
	QueueDisk      string
	QueueDiskError string
	// Reload: the last configuration reload, when one failed (the
	// running configuration is the one before it).
	ReloadError string
	// Buckets jobs route to, each with its state.
	Buckets []string
	Dropped string
	// Filtered: samples left out by design (NaN and ±Inf values InfluxDB
	// cannot store, series metric relabeling drops): expected, not lost.
	Filtered string
	Members  []string
	Self     string
}

type pageData struct {
	Status                    pageStatus
	Jobs                      []jobRow
	Rows                      []targetRow
	Total, Matching           int
	State, Job, Query         string
	Page, Pages               int
	Prev, Next                template.URL
	First, Last               int
	Up, Down, Skipped         int
	AllLink, UpLink, DownLink template.URL
	States                    []string
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	default:
		return fmt.Sprintf("%.1fh ago", d.Hours())
	}
}

func rowOf(st scrape.Status, now time.Time) targetRow {
	tags := make(map[string]string, len(st.Target.Tags))
	for _, tg := range st.Target.Tags {
		tags[tg.Key] = tg.Value
	}
	r := targetRow{
		ConfigJob: st.ConfigJob,
		URL:       st.Target.Redacted(), Job: st.Target.Tag("job"), Instance: st.Target.Tag("instance"), Tags: tags,
		Health: string(st.Health), Role: st.Role, Owners: st.Owners,
		IntervalSeconds: st.Interval.Seconds(), LastScrapeAgo: ago(st.LastScrape, now),
		DurationSeconds: st.LastDuration.Seconds(), Samples: st.LastSamples,
		Scrapes: st.ScrapesTotal, Failures: st.FailuresTotal, LastError: st.LastError,
		Series: st.Cardinality.Series, NewSeries: st.Cardinality.NewLastHour,
		SeriesLimit: st.Cardinality.Limit, SeriesHeldBack: st.Cardinality.Limited, WidestLabels: st.Cardinality.Widest,
		SchemaHeld: st.Cardinality.SchemaHeld, SchemaHeldWhy: st.Cardinality.SchemaHeldWhy,
		Lint: st.Lint,
	}
	if !st.LastScrape.IsZero() {
		ls := st.LastScrape
		r.LastScrape = &ls
	}
	return r
}

// matches applies the page's filters: state (up, down, unknown, skipped),
// job, and a search over URL, tags and the last error.
func matches(r *targetRow, state, job, q string) bool {
	if state != "" && r.Health != state {
		return false
	}
	if job != "" && r.Job != job && r.ConfigJob != job {
		return false
	}
	if q == "" {
		return true
	}
	if strings.Contains(strings.ToLower(r.URL), q) || strings.Contains(strings.ToLower(r.LastError), q) {
		return true
	}
	if r.Lint != nil {
		for _, f := range r.Lint.Findings {
			if strings.Contains(f.Rule, q) {
				return true
			}
		}
	}
	for k, v := range r.Tags {
		if strings.Contains(strings.ToLower(k+"="+v), q) {
			return true
		}
	}
	return false
}

func pageLink(state, job, q string, page int) template.URL {
	v := url.Values{}
	if state != "" {
		v.Set("state", state)
	}
	if job != "" {
		v.Set("job", job)
	}
	if q != "" {
		v.Set("q", q)
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/targets"
	}
	return template.URL("/targets?" + v.Encode())
}

func (w *webServer) targetsPage(rw http.ResponseWriter, r *http.Request) {
	now := time.Now()
	qv := r.URL.Query()
	state, job := qv.Get("state"), qv.Get("job")
	search := strings.ToLower(strings.TrimSpace(qv.Get("q")))
	all := w.targets.Targets()
	rows := make([]targetRow, 0, len(all))
	// One row per job of the configuration, whatever its discovery: a
	// Consul job's targets carry their service names as job tags, listed
	// in its row.
	jobs := map[string]*jobRow{}
	for _, sum := range w.targets.Summaries() {
		jr := &jobRow{Name: sum.Name, Discovered: sum.Discovered, NoTargets: sum.Synced && sum.Discovered == 0,
			Sources: sum.Sources, SkippedInst: sum.Discovery.Skipped, tags: map[string]bool{}}
		switch ds := sum.Discovery; {
		case ds.Err != "" && sum.Synced:
			jr.Discovery = fmt.Sprintf("failing %s: %s; scraping the %d targets found before", ago(ds.ErrSince, now), ds.Err, sum.Discovered)
			jr.DiscoveryError = true
		case ds.Err != "":
			jr.Discovery = fmt.Sprintf("failing %s, no targets found yet: %s", ago(ds.ErrSince, now), ds.Err)
			jr.DiscoveryError = true
		case !sum.Synced:
			jr.Discovery = "waiting for a first answer"
		case sum.Discovered == 0:
			jr.Discovery = "no targets found: check the Consul service, tag and node-meta filters"
			jr.DiscoveryError = true
		default:
			jr.Discovery = fmt.Sprintf("%d discovered", sum.Discovered)
			if !ds.LastSuccess.IsZero() {
				jr.Discovery += ", read " + ago(ds.LastSuccess, now)
			}
		}
		jobs[sum.Name] = jr
	}
	for _, b := range w.sink.JobBudgets() {
		jr := jobs[b.Job]
		if jr == nil {
			continue
		}
		var parts []string
		if b.HourLimit > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d new series this hour", b.HourUsed, b.HourLimit))
		}
		if b.DayLimit > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d today", b.DayUsed, b.DayLimit))
		}
		if b.DroppedSamples > 0 {
			parts = append(parts, fmt.Sprintf("%d samples of new series held back", b.DroppedSamples))
			jr.BudgetError = true
		}
		jr.Budget = strings.Join(parts, ", ")
	}
	var d pageData
	for _, st := range all {
		row := rowOf(st, now)
		name := row.ConfigJob
		if name == "" {
			name = row.Job
		}
		jr := jobs[name]
		if jr == nil {
			jr = &jobRow{Name: name, tags: map[string]bool{}}
			jobs[name] = jr
		}
		if row.Job != name && !jr.tags[row.Job] {
			jr.tags[row.Job] = true
			jr.JobTags = append(jr.JobTags, row.Job)
		}
		switch st.Health {
		case scrape.HealthUp:
			jr.Up++
			d.Up++
		case scrape.HealthDown:
			jr.Down++
			d.Down++
		case scrape.HealthSkipped:
			jr.Skipped++
			d.Skipped++
		default:
			jr.Unknown++
		}
		if matches(&row, state, job, search) {
			rows = append(rows, row)
		}
	}
	if qv.Get("format") == "json" {
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(rows) // [] when empty, never null
		return
	}
	d.Total, d.Matching = len(all), len(rows)
	d.State, d.Job, d.Query = state, job, qv.Get("q")
	d.Pages = max(1, (len(rows)+pageSize-1)/pageSize)
	d.Page, _ = strconv.Atoi(qv.Get("page"))
	d.Page = min(max(d.Page, 1), d.Pages)
	from := (d.Page - 1) * pageSize
	to := min(from+pageSize, len(rows))
	d.Rows = rows[from:to]
	d.First, d.Last = from+1, to
	if d.Page > 1 {
		d.Prev = pageLink(state, job, d.Query, d.Page-1)
	}
	if d.Page < d.Pages {
		d.Next = pageLink(state, job, d.Query, d.Page+1)
	}
	d.AllLink, d.UpLink, d.DownLink = pageLink("", job, d.Query, 1), pageLink("up", job, d.Query, 1), pageLink("down", job, d.Query, 1)
	for _, jr := range jobs {
		sort.Strings(jr.JobTags)
		jr.Link, jr.DownLink = pageLink("", jr.Name, "", 1), pageLink("down", jr.Name, "", 1)
		d.Jobs = append(d.Jobs, *jr)
	}
	sort.Slice(d.Jobs, func(a, b int) bool { return d.Jobs[a].Name < d.Jobs[b].Name })
	d.Status = w.pageStatus(now)
	d.States = []string{"up", "down", "unknown", "skipped"}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := targetsTemplate.Execute(rw, d); err != nil {
		w.log.Debug("cannot render targets page", "err", err)
	}
}

func (w *webServer) pageStatus(now time.Time) pageStatus {
	st := w.sink.Stats()
	ps := pageStatus{Writer: "ok", WriterClass: "up", LastWrite: ago(st.LastWrite, now),
		QueuedSamples: st.QueuedSamples, QueuedBytes: st.QueuedBytes}
	lost, filtered := map[string]int64{}, map[string]int64{}
	for r, n := range st.Dropped {
		if r == sink.DropNonFinite.String() || r == sink.DropRelabeled.String() {
			filtered[r] = n
		} else {
			lost[r] = n
		}
	}
	ps.Dropped, ps.Filtered = droppedByReason(lost), droppedByReason(filtered)
	if qs := w.sink.QueueStatus(); qs.MaxDisk > 0 {
		ps.QueueDisk = fmt.Sprintf("%d of %d bytes on disk (%.0f%%)", qs.Disk, qs.MaxDisk, 100*float64(qs.Disk)/float64(qs.MaxDisk))
		if qs.DiskError != "" {
			ps.QueueDiskError = fmt.Sprintf("the disk refuses writes (first refusal %s: %s): %d bytes wait in memory, bound %d", ago(qs.DiskErrorSince, now), qs.DiskError, qs.MemoryOnly, qs.MaxMemory)
		}
	}
	if u := st.Undelivered(now); u > 0 {
		ps.Writer = fmt.Sprintf("failing for %s (%d attempts)", u.Round(time.Second), st.ConsecutiveFailures)
		ps.WriterClass, ps.LastError = "down", st.LastWriteError
	} else if st.LastWrite.IsZero() {
		ps.Writer, ps.WriterClass = "no write yet", "unknown"
	}
	if w.shard != nil {
		ps.Members, _ = w.shard.Members()
		ps.Self = w.shard.Self()
	}
	for _, b := range w.sink.Buckets() {
		line := fmt.Sprintf("%s: %d written, %d queued", b.Bucket, b.Written, b.Queued)
		if b.Undelivered > 0 {
			line += fmt.Sprintf(", failing for %s: %s", b.Undelivered.Round(time.Second), b.LastError)
		}
		ps.Buckets = append(ps.Buckets, line)
	}
	if rs := w.reload.status(); rs.Err != "" {
		ps.ReloadError = fmt.Sprintf("the configuration reload %s failed, the configuration loaded %s runs on: %s", ago(rs.Attempt, now), ago(rs.LastSuccess, now), rs.Err)
	}
	return ps
}

var targetsTemplate = template.Must(template.New("targets").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="10"><title>scrapeflux targets</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f4f4f4}.up{background:#e6f6e6}.down{background:#fbe3e3}.unknown{background:#f6f6e0}.skipped{color:#888}
.tags{color:#555;font-size:12px}.err{color:#a00;max-width:40em;word-break:break-all}.url{font-size:12px;word-break:break-all}
header{display:flex;gap:2em;flex-wrap:wrap}header div{padding:.3em .6em;border-radius:4px}
form{margin:.5em 0}nav a{margin-right:1em}
</style></head><body>
<h1>scrapeflux targets</h1><p><a href="/service-discovery">service discovery</a>: what each discovery found, before relabeling, and what became of it</p>
<header id="status">
<div class="{{.Status.WriterClass}}"><b>InfluxDB writes:</b> <span id="writer">{{.Status.Writer}}</span>, last {{.Status.LastWrite}}{{if .Status.LastError}}<br><span class="err">{{.Status.LastError}}</span>{{end}}</div>
<div><b>Queue:</b> {{.Status.QueuedSamples}} samples, {{.Status.QueuedBytes}} bytes{{with .Status.QueueDisk}}; {{.}}{{end}}{{if .Status.Dropped}}; <span class="err">dropped {{.Status.Dropped}}</span>{{end}}{{if .Status.Filtered}}; <small>left out as expected: {{.Status.Filtered}} (NaN/±Inf values InfluxDB cannot store, series dropped by relabeling)</small>{{end}}</div>
{{with .Status.QueueDiskError}}<div class="down"><b>Disk queue degraded:</b> {{.}}</div>{{end}}
{{with .Status.Buckets}}<div><b>Buckets of jobs:</b> {{range $i, $b := .}}{{if $i}}; {{end}}{{$b}}{{end}}</div>{{end}}
{{with .Status.ReloadError}}<div class="down"><b>Configuration:</b> <span class="err">{{.}}</span></div>{{end}}
{{if .Status.Self}}<div><b>Cluster:</b> this replica {{.Status.Self}}, members {{range $i, $m := .Status.Members}}{{if $i}}, {{end}}{{$m}}{{end}}</div>{{end}}
</header>
<h2>Jobs</h2>
<table id="jobs"><thead><tr><th>Job</th><th>Up</th><th>Down</th><th>Unknown</th><th>Other replicas'</th><th>Discovery</th></tr></thead><tbody>
{{range .Jobs}}<tr{{if .DiscoveryError}} class="down"{{end}}><td><a href="{{.Link}}">{{.Name}}</a>{{with .JobTags}}<br><small>job tags: {{range $i, $t := .}}{{if $i}}, {{end}}{{$t}}{{end}}</small>{{end}}</td><td>{{.Up}}</td><td>{{if .Down}}<a href="{{.DownLink}}">{{.Down}}</a>{{else}}0{{end}}</td><td>{{.Unknown}}</td><td>{{.Skipped}}</td>
<td>{{with .Sources}}{{.}}: {{end}}{{if .DiscoveryError}}<b>{{.Discovery}}</b>{{else}}{{.Discovery}}{{end}}{{with .SkippedInst}}<br><small>skipped instances: {{range $i, $s := .}}{{if $i}}; {{end}}{{$s}}{{end}}</small>{{end}}{{if .Budget}}<br><small class="budget{{if .BudgetError}} err{{end}}">series budget{{if $.Status.Self}} (this replica's count){{end}}: {{.Budget}}</small>{{end}}</td></tr>
{{end}}</tbody></table>
<h2>Targets: {{.Up}} up, {{.Down}} down{{if .Skipped}}, {{.Skipped}} scraped by other replicas{{end}}, {{.Total}} in all</h2>
<nav><a href="{{.AllLink}}">all</a><a href="{{.UpLink}}">up</a><a href="{{.DownLink}}">down</a></nav>
<form method="get" action="/targets">
<select name="state"><option value="">any state</option>{{range $s := .States}}<option value="{{$s}}"{{if eq $s $.State}} selected{{end}}>{{$s}}</option>{{end}}</select>
{{if .Job}}<input type="hidden" name="job" value="{{.Job}}">{{end}}
<input type="search" name="q" value="{{.Query}}" placeholder="search URL, tags, error, lint rule" size="30">
<button type="submit">filter</button></form>
<p id="matching">{{.Matching}} matching{{if .Job}} in job {{.Job}}{{end}}{{if .Matching}}, showing {{.First}}-{{.Last}} (page {{.Page}} of {{.Pages}}){{end}}
{{if .Prev}}<a href="{{.Prev}}">previous</a>{{end}} {{if .Next}}<a href="{{.Next}}">next</a>{{end}}</p>
<table id="targets"><thead><tr><th>Job</th><th>Target</th><th>State</th><th>Last scrape</th><th>Every</th><th>Duration</th><th>Samples</th><th>Scrapes / failures</th><th>Last error</th><th>Lint</th></tr></thead><tbody>
{{range .Rows}}<tr class="{{.Health}}"><td>{{.Job}}</td><td><a class="url" href="{{.URL}}">{{.URL}}</a><div class="tags">{{range $k, $v := .Tags}}{{$k}}={{$v}} {{end}}</div></td>
<td class="state">{{.Health}}{{if .Role}}<div class="tags">{{.Role}}{{if .Owners}}: {{range $i, $o := .Owners}}{{if $i}}, {{end}}{{$o}}{{end}}{{end}}</div>{{end}}</td>
<td>{{.LastScrapeAgo}}</td><td>{{.IntervalSeconds}}s</td><td>{{printf "%.3fs" .DurationSeconds}}</td><td>{{.Samples}}{{if .Series}}<br><small>{{.Series}} series{{if .SeriesLimit}} (limit {{.SeriesLimit}}){{end}}, {{.NewSeries}} new in the last hour{{if .SeriesHeldBack}}, <b class="err">{{.SeriesHeldBack}} samples of new series held back</b>{{end}}{{with .WidestLabels}}; widest labels: {{range $i, $l := .}}{{if $i}}, {{end}}{{$l.Name}} ({{if $l.AtLeast}}&ge;{{end}}{{$l.Values}}){{end}}{{end}}</small>{{end}}{{if .SchemaHeld}}<br><small class="err">{{.SchemaHeld}} samples held back by the InfluxDB 3 schema guard: {{.SchemaHeldWhy}}</small>{{end}}</td><td>{{.Scrapes}} / {{.Failures}}</td><td class="err">{{.LastError}}</td>
<td class="lint">{{with .Lint}}{{range .Findings}}<div title="{{.Example}}"><b>{{.Rule}}</b> &times;{{.Count}}: <small>{{.Example}}</small></div>{{else}}clean{{end}}{{end}}</td></tr>
{{end}}</tbody></table></body></html>`))

// discoveryPage shows every job's last discovery snapshot: each instance's
// labels before relabeling and what became of it (scraped as which URL,
// dropped by relabeling, another replica's), as Prometheus's service
// discovery page does. ?format=json gives the same.
func (w *webServer) discoveryPage(rw http.ResponseWriter, r *http.Request) {
	jobs := w.targets.Discovery()
	if r.URL.Query().Get("format") == "json" {
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(jobs)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := discoveryTemplate.Execute(rw, jobs); err != nil {
		w.log.Debug("cannot render the discovery page", "err", err)
	}
}

var discoveryTemplate = template.Must(template.New("sd").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>scrapeflux service discovery</title>
<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}.drop{color:#a00}small{color:#555}</style></head><body>
<h1>Service discovery</h1><p><a href="/targets">targets</a> · <a href="?format=json">JSON</a></p>
{{range .}}<h2 id="{{.Job}}">{{.Job}}: {{len .Targets}} discovered</h2>
<table><thead><tr><th>Discovered</th><th>Labels before relabeling</th><th>Outcome</th></tr></thead><tbody>
{{range .Targets}}<tr><td>{{.URL}}</td><td><small>{{range $k, $v := .Tags}}{{$k}}="{{$v}}" {{end}}{{range $k, $v := .Meta}}{{$k}}="{{$v}}" {{end}}</small></td>
<td{{if ne .Outcome "scraped"}} class="drop"{{end}}>{{.Outcome}}{{with .Scraped}} as {{.}}{{end}}{{with .RelabelSteps}}<details class="steps"><summary>relabel steps ({{len .}})</summary><ol start="0">{{range .}}<li{{if .Dropped}} class="drop"{{end}}>{{.Action}}{{if .Line}} (line {{.Line}}){{end}}: {{if .Dropped}}<b>dropped</b>{{else if .Changes}}{{range $i, $c := .Changes}}{{if $i}}, {{end}}<code>{{$c}}</code>{{end}}{{else}}<small>no change</small>{{end}}</li>{{end}}</ol></details>{{end}}</td></tr>
{{end}}</tbody></table>
{{else}}<p>No job runs.</p>{{end}}
</body></html>`))
