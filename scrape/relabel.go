package scrape

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// relabelTarget applies target relabeling with Prometheus semantics: the
// target's tags, its discovery meta labels and __address__, __scheme__,
// __metrics_path__ (and __param_* from the query) go in; labels starting
// with "__" are dropped afterwards, instance defaults to __address__. It
// reports whether the target is kept.
func relabelTarget(t discovery.Target, cfgs []*relabel.Config) (discovery.Target, bool, error) {
	if len(cfgs) == 0 {
		t.Meta = nil
		return t, true, nil
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return t, false, fmt.Errorf("cannot parse target URL %q: %w", t.Redacted(), err)
	}
	lb := labels.NewBuilder(labels.EmptyLabels())
	for k, v := range t.Meta {
		lb.Set(k, v)
	}
	for _, tg := range t.Tags {
		lb.Set(tg.Key, tg.Value)
	}
	lb.Set("__address__", u.Host)
	lb.Set("__scheme__", u.Scheme)
	lb.Set("__metrics_path__", u.Path)
	for k, vs := range u.Query() {
		if len(vs) > 0 {
			lb.Set("__param_"+k, vs[0])
		}
	}
	if !relabel.ProcessBuilder(lb, cfgs...) {
		return t, false, nil
	}
	ls := lb.Labels()
	addr := ls.Get("__address__")
	if addr == "" {
		return t, false, fmt.Errorf("target %s has no __address__ after relabeling", t.Redacted())
	}
	out := url.URL{Scheme: ls.Get("__scheme__"), Host: addr, Path: ls.Get("__metrics_path__")}
	q := url.Values{}
	var tags []discovery.Tag
	ls.Range(func(l labels.Label) {
		if strings.HasPrefix(l.Name, "__param_") {
			q.Set(strings.TrimPrefix(l.Name, "__param_"), l.Value)
		}
		if !strings.HasPrefix(l.Name, "__") && l.Value != "" {
			tags = append(tags, discovery.Tag{Key: l.Name, Value: l.Value})
		}
	})
	out.RawQuery = q.Encode()
	if ls.Get("instance") == "" {
		tags = append(tags, discovery.Tag{Key: "instance", Value: addr})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	nt, err := discovery.NewTarget(out.String(), ls.Get("job"))
	if err != nil {
		return t, false, err
	}
	nt.Tags = tags
	return nt, true, nil
}

// withTag returns t with tag key set to value (a copy; t is shared).
func withTag(t discovery.Target, key, value string) discovery.Target {
	tags := make([]discovery.Tag, 0, len(t.Tags))
	for _, tg := range t.Tags {
		if tg.Key != key {
			tags = append(tags, tg)
		}
	}
	tags = append(tags, discovery.Tag{Key: key, Value: value})
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	t.Tags = tags
	return t
}
