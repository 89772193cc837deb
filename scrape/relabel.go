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
	lb, err := TargetLabels(t)
	if err != nil {
		return t, false, err
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

// TargetLabels are the labels target relabeling starts from: the
// target's tags, its discovery meta labels and __address__, __scheme__,
// __metrics_path__ and __param_* from its URL.
func TargetLabels(t discovery.Target) (*labels.Builder, error) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return nil, fmt.Errorf("cannot parse target URL %q: %w", t.Redacted(), err)
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
	return lb, nil
}

// RelabelStep is what one relabel rule did to a label set: the rule (its
// place in the list, its line in the file when known, its action), the
// labels it set, changed or removed, and whether it dropped the set.
// Rules that change nothing are steps too, with no changes.
type RelabelStep struct {
	Rule    int      `json:"rule"`
	Line    int      `json:"line,omitempty"`
	Action  string   `json:"action"`
	Changes []string `json:"changes,omitempty"`
	Dropped bool     `json:"dropped,omitempty"`
}

// TraceRelabel applies rules to lb one at a time, as Prometheus's
// relabel.ProcessBuilder applies them in a row (the daemon's own call),
// and says what each did; it stops at the rule that drops the set. lines
// are the rules' lines in their file (nil: unknown). It reports whether
// the set is kept; lb holds the labels after the last rule applied.
func TraceRelabel(lb *labels.Builder, rules []*relabel.Config, lines []int) ([]RelabelStep, bool) {
	steps := make([]RelabelStep, 0, len(rules))
	for i, rc := range rules {
		before := lb.Labels()
		st := RelabelStep{Rule: i, Action: string(rc.Action)}
		if i < len(lines) {
			st.Line = lines[i]
		}
		if !relabel.ProcessBuilder(lb, rc) {
			st.Dropped = true
			steps = append(steps, st)
			return steps, false
		}
		st.Changes = labelChanges(before, lb.Labels())
		steps = append(steps, st)
	}
	return steps, true
}

// labelChanges lists what differs from before to after: +name="value"
// for a label set, name: "old" -> "new" for one changed, -name for one
// removed.
func labelChanges(before, after labels.Labels) []string {
	var out []string
	after.Range(func(l labels.Label) {
		switch old := before.Get(l.Name); {
		case !before.Has(l.Name):
			out = append(out, fmt.Sprintf("+%s=%q", l.Name, l.Value))
		case old != l.Value:
			out = append(out, fmt.Sprintf("%s: %q -> %q", l.Name, old, l.Value))
		}
	})
	before.Range(func(l labels.Label) {
		if !after.Has(l.Name) {
			out = append(out, "-"+l.Name)
		}
	})
	return out
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
