package scrape

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// plainJob is a FileJob without its UnmarshalYAML.
type plainJob FileJob

// UnmarshalYAML reads a job: the keys a discovery source registered
// (discovery.RegisterConfig) into Sources, in the order written, the rest
// into the job's own fields. Both are decoded strictly (an unknown key is
// an error, worded as the file's decoder words it), and every problem is
// kept for DecodeErrors, not only the first: an error returned here would
// drop the job from the list, and with it the checks of its other fields.
func (j *FileJob) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a job is a mapping of keys (job_name: ..., static_targets: ...)", n.Line)}}
	}
	var errs []string
	rest := *n
	rest.Content = nil
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := n.Content[k], n.Content[k+1]
		t, list, ok := discovery.SourceType(key.Value)
		if !ok {
			rest.Content = append(rest.Content, key, val)
			continue
		}
		items := []*yaml.Node{val}
		if list {
			if val.Kind != yaml.SequenceNode {
				errs = append(errs, fmt.Sprintf("line %d: %s: a list is expected", val.Line, key.Value))
				continue
			}
			items = val.Content
		}
		for _, item := range items {
			cfg := reflect.New(t)
			if e := decodeStrict(item, cfg.Interface()); len(e) > 0 {
				errs = append(errs, e...)
				continue
			}
			j.Sources = append(j.Sources, cfg.Interface().(discovery.Config))
		}
	}
	errs = append(errs, decodeStrict(&rest, (*plainJob)(j))...)
	j.decodeErrs = errs
	return nil
}

// DecodeErrors are the problems found while reading the job, as a
// *yaml.TypeError ("line N: ..." each), or nil.
func (j *FileJob) DecodeErrors() error {
	if len(j.decodeErrs) == 0 {
		return nil
	}
	return &yaml.TypeError{Errors: j.decodeErrs}
}

// decodeStrict decodes n into v, reporting keys v has no field for as the
// file's strict decoder does (Node.Decode alone ignores them).
func decodeStrict(n *yaml.Node, v any) []string {
	errs := unknownKeys(n, reflect.TypeOf(v))
	if err := n.Decode(v); err != nil {
		if te, ok := err.(*yaml.TypeError); ok {
			errs = append(errs, te.Errors...)
		} else {
			errs = append(errs, err.Error())
		}
	}
	return errs
}

var nodeUnmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// unknownKeys lists the keys of n that t has no field for, at any depth,
// in the words of yaml's strict decoder. A type with its own
// UnmarshalYAML(*yaml.Node) checks itself.
func unknownKeys(n *yaml.Node, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		if t.Implements(nodeUnmarshaler) {
			return nil
		}
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(nodeUnmarshaler) {
		return nil
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		var errs []string
		for _, item := range n.Content {
			errs = append(errs, unknownKeys(item, t.Elem())...)
		}
		return errs
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		var errs []string
		for k := 1; k < len(n.Content); k += 2 {
			errs = append(errs, unknownKeys(n.Content[k], t.Elem())...)
		}
		return errs
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		var errs []string
		for k := 0; k+1 < len(n.Content); k += 2 {
			key := n.Content[k]
			ft, ok := fields[key.Value]
			if !ok {
				errs = append(errs, fmt.Sprintf("line %d: field %s not found in type %s", key.Line, key.Value, t))
				continue
			}
			errs = append(errs, unknownKeys(n.Content[k+1], ft)...)
		}
		return errs
	}
	return nil
}

// yamlFields maps the keys a struct reads to their types, inlined structs
// included.
func yamlFields(t reflect.Type, into map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, into)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		into[name] = f.Type
	}
}
