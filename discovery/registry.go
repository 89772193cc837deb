package discovery

import (
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
)

// Config is one discovery source of a job, as configured. Every source
// (static targets, Consul, file_sd, http_sd, a Swarm) is a Config
// registered once under the key a job of the config file names it by
// (RegisterConfig, in the source's own file); the scrape manager builds
// every source the same way and names none. A Config is marshalled to
// JSON to tell whether a reloaded job changed, so it holds only what
// configures the source.
type Config interface {
	// Name is the source's kind on pages and in logs: static, consul,
	// file_sd, http_sd, dockerswarm_sd.
	Name() string
	// Validate reports what cannot work, naming the field; it builds
	// nothing, so a config is checked at load without a discoverer.
	Validate(DiscovererOptions) error
	// NewDiscoverer builds the source of a valid config.
	NewDiscoverer(DiscovererOptions) (Discoverer, error)
}

// DiscovererOptions is what a source gets from the job it serves.
type DiscovererOptions struct {
	// Job names the job: the job tag of targets that bring none.
	Job    string
	Logger *slog.Logger
	// Consul is the connection to Consul the flags give (address, TLS,
	// token): a job's consul: section selects services through it.
	Consul ConsulConfig
}

// StatusReporter is a discoverer that says how it is doing (all but
// static targets, which cannot fail).
type StatusReporter interface {
	Status() Status
}

// registered is one source a job of the config file can name.
type registered struct {
	key string
	// list: the key holds a list of configs (file_sd_configs); else one
	// (consul:, static_targets:).
	list bool
	typ  reflect.Type // the Config's type, a pointer to a struct or slice
}

var registry = struct {
	sync.Mutex
	byKey map[string]registered
}{byKey: map[string]registered{}}

// RegisterConfig makes a source nameable in a job of the config file under
// key: a list of configs when list is set (each element decoded into a new
// value of cfg's type), else one. cfg is a pointer, its zero value the
// template. Call it from an init function; a key registered twice panics.
func RegisterConfig(key string, list bool, cfg Config) {
	t := reflect.TypeOf(cfg)
	if t.Kind() != reflect.Pointer {
		panic(fmt.Sprintf("discovery: RegisterConfig(%q): want a pointer, got %s", key, t))
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.byKey[key]; dup {
		panic(fmt.Sprintf("discovery: source %q registered twice", key))
	}
	registry.byKey[key] = registered{key: key, list: list, typ: t.Elem()}
}

// SourceKeys are the keys of every registered source, sorted.
func SourceKeys() []string {
	registry.Lock()
	defer registry.Unlock()
	keys := make([]string, 0, len(registry.byKey))
	for k := range registry.byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// SourceType is the type a registered key's value decodes into (for each
// element when list is set); ok is false for a key no source registered.
func SourceType(key string) (t reflect.Type, list, ok bool) {
	registry.Lock()
	defer registry.Unlock()
	r, ok := registry.byKey[key]
	return r.typ, r.list, ok
}

// NewSourceConfig returns a new zero config for key, to decode into.
func NewSourceConfig(key string) (Config, bool) {
	t, _, ok := SourceType(key)
	if !ok {
		return nil, false
	}
	return reflect.New(t).Interface().(Config), true
}

// KeyOf is the key c's source registered, "" for a type no source
// registered.
func KeyOf(c Config) string {
	t := reflect.TypeOf(c)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	registry.Lock()
	defer registry.Unlock()
	for k, r := range registry.byKey {
		if r.typ == t {
			return k
		}
	}
	return ""
}
