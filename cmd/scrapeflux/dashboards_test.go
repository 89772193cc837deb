package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

type dashboard struct {
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name    string `json:"name"`
			Type    string `json:"type"`
			Query   string `json:"query"`
			Refresh int    `json:"refresh"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Query string `json:"query"`
			Alias string `json:"alias"`
		} `json:"targets"`
	} `json:"panels"`
}

// expect is what a panel must show: at least min series, each with a
// non-null value, grouped by the tags in per (every series has them), and
// with nonzero: some value other than 0.
type expect struct {
	min     int
	per     []string
	nonzero bool
}

// panelExpectations: every panel of every shipped dashboard has an entry,
// so a new panel comes with what it must show. The fleet: three engines
// (17.05, 18.09 worker, 18.09 swarm manager), one scrapeflux with --cluster.
var panelExpectations = map[string]map[string]expect{
	"docker-engine.json": {
		"Targets up":                               {min: 3, per: []string{"instance"}, nonzero: true},
		"Scrape duration":                          {min: 3, per: []string{"instance"}, nonzero: true},
		"Engine CPUs":                              {min: 3, per: []string{"instance"}, nonzero: true},
		"Engine host memory":                       {min: 3, per: []string{"instance"}, nonzero: true},
		"Containers by state":                      {min: 6, per: []string{"instance", "state"}, nonzero: true},
		"Container actions per second":             {min: 15, per: []string{"instance", "action"}, nonzero: true},
		"Container action latency (mean)":          {min: 15, per: []string{"instance", "action"}},
		"Container actions done within 100ms / 1s": {min: 30, per: []string{"instance", "action"}, nonzero: true},
		"Engine events per second":                 {min: 3, per: []string{"instance"}, nonzero: true},
		"Failed health checks per second":          {min: 3, per: []string{"instance"}, nonzero: true},
		"Swarm leader":                             {min: 2, per: []string{"instance"}, nonzero: true},
		"Swarm nodes (managers)":                   {min: 4, per: []string{"state"}, nonzero: true},
		"Swarm tasks (managers)":                   {min: 14, per: []string{"state"}, nonzero: true},
		"Swarm objects (managers)":                 {min: 4, nonzero: true},
		"Raft transaction latency (mean)":          {min: 2, per: []string{"instance"}},
		"Store write transaction latency (mean)":   {min: 2, per: []string{"instance"}},
		"Engine resident memory":                   {min: 3, per: []string{"instance"}, nonzero: true},
		"Engine goroutines":                        {min: 3, per: []string{"instance"}, nonzero: true},
		"Engine Go heap in use":                    {min: 3, per: []string{"instance"}, nonzero: true},
		"Engine GC pause (mean)":                   {min: 3, per: []string{"instance"}, nonzero: true},
	},
	"scrapeflux.json": {
		"Targets by health":                              {min: 2, per: []string{"instance", "health"}, nonzero: true},
		"Scrapes and failures per second, by job":        {min: 4, per: []string{"instance", "exported_job"}, nonzero: true},
		"Scrape start lag (max)":                         {min: 1, per: []string{"instance"}},
		"Skipped intervals per second":                   {min: 2, per: []string{"instance", "exported_job"}},
		"Samples scraped and written per second":         {min: 2, per: []string{"instance"}, nonzero: true},
		"Samples dropped per second, by reason":          {min: 8, per: []string{"instance", "reason"}},
		"Queue":                                          {min: 2, per: []string{"instance"}},
		"InfluxDB write requests per second, by outcome": {min: 2, per: []string{"instance", "outcome"}, nonzero: true},
		"InfluxDB consecutive write failures":            {min: 1, per: []string{"instance"}},
		"Consul requests and errors per second":          {min: 8, per: []string{"instance", "query"}, nonzero: true},
		"Cluster members and targets owned":              {min: 2, per: []string{"instance"}, nonzero: true},
		"Resident memory":                                {min: 1, per: []string{"instance"}, nonzero: true},
	},
}

// TestDashboardsOnRealData fills a real InfluxDB through scrapeflux from
// simulated engines (found in a real Consul) and scrapeflux's own
// /metrics, then runs every query of every shipped dashboard, Grafana's
// macros substituted, and checks each panel shows the series it is meant
// to show.
func TestDashboardsOnRealData(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "docker")
	fleet, err := simulator.StartFleet(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	for i, u := range fleet.URLs {
		host, port := hostPort(u)
		agent.Register(t, fmt.Sprintf("engine-%d", i), "docker-engine", fmt.Sprintf("http://%s:%d/metrics", host, port), []string{"prometheus"}, nil, nil)
	}
	listen := "127.0.0.1:" + strconv.Itoa(servertest.FreePort(t))
	d := startDaemon(t, "run", "--consul", "--consul-addr", agent.Addr, "--consul-wait", "2s",
		"--cluster", "dash", "--cluster-id", "replica-1",
		"--target", "http://"+listen+"/metrics", "--job", "scrapeflux",
		"--interval", "500ms", "--flush-interval", "100ms",
		"--influx-url", srv.URL, "--influx-bucket", "docker", "--listen", listen, "--queue-dir", t.TempDir())
	defer d.stop(t)
	// Enough scrapes that every derivative has two points per series.
	servertest.WaitFor(t, "12 scrapes of every engine", 30*time.Second, func() bool {
		for _, tg := range fleet.Targets {
			if tg.Scrapes() < 12 {
				return false
			}
		}
		resp, err := http.Get("http://" + listen + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return true
	})
	servertest.WaitFor(t, "the scrapes' lines written", 10*time.Second, func() bool {
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return metricValue(m, "scrapeflux_queued_samples") == 0
	})

	for file, panels := range panelExpectations {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile("../../configs/grafana/" + file)
			if err != nil {
				t.Fatal(err)
			}
			var dash dashboard
			if err := json.Unmarshal(data, &dash); err != nil {
				t.Fatal(err)
			}
			for _, v := range dash.Templating.List {
				if v.Type != "query" {
					continue
				}
				if v.Refresh != 1 {
					t.Errorf("variable %s is not refreshed on load", v.Name)
				}
				res, err := srv.TryQuery("docker", grafanaMacros(v.Query))
				if err != nil || len(res) == 0 || len(res[0].Values) == 0 {
					t.Errorf("variable %s: %v, %d series", v.Name, err, len(res))
				}
			}
			seen := map[string]bool{}
			for _, p := range dash.Panels {
				seen[p.Title] = true
				want, ok := panels[p.Title]
				if !ok {
					t.Errorf("panel %q has no expectation in the test", p.Title)
					continue
				}
				var series []servertest.Result
				for _, tg := range p.Targets {
					if tg.Alias == "" {
						t.Errorf("panel %q: a query without a legend alias", p.Title)
					}
					res, err := srv.TryQuery("docker", grafanaMacros(tg.Query))
					if err != nil {
						t.Errorf("panel %q: %v", p.Title, err)
						continue
					}
					series = append(series, res...)
				}
				checkPanel(t, p.Title, want, series)
			}
			for title := range panels {
				if !seen[title] {
					t.Errorf("expectation for a panel the dashboard lacks: %q", title)
				}
			}
		})
	}
}

// grafanaMacros substitutes what Grafana would: the time filter, the
// interval, and "All" for every template variable.
func grafanaMacros(q string) string {
	r := strings.NewReplacer("$timeFilter", "time > now() - 10m", "$__interval", "1s",
		"/^$job$/", "/^.*$/", "/^$instance$/", "/^.*$/")
	return r.Replace(q)
}

func checkPanel(t *testing.T, title string, want expect, series []servertest.Result) {
	t.Helper()
	withValues, nonzero := 0, false
	for _, s := range series {
		for _, k := range want.per {
			if s.Tags[k] == "" {
				t.Errorf("panel %q: a series without tag %s: %v", title, k, s.Tags)
			}
		}
		has := false
		for _, v := range s.Values {
			if len(v) < 2 || v[1] == nil {
				continue
			}
			has = true
			if n, err := v[1].(json.Number).Float64(); err == nil && n != 0 {
				nonzero = true
			}
		}
		if has {
			withValues++
		}
	}
	if withValues < want.min {
		t.Errorf("panel %q: %d series with values, want at least %d", title, withValues, want.min)
	}
	if want.nonzero && !nonzero {
		t.Errorf("panel %q: every value is 0", title)
	}
}
